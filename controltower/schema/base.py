"""The shared MetaData object every table module registers into."""

import sqlalchemy as sa

metadata = sa.MetaData()
