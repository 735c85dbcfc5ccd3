# One image for every Control Tower process; the compose file picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/controltower

COPY pyproject.toml README.md ./
COPY controltower ./controltower
COPY collectors ./collectors
COPY metrics ./metrics
COPY alerts ./alerts
COPY app ./app
COPY simulator ./simulator
COPY wiring ./wiring
COPY .streamlit ./.streamlit
RUN pip install '.[sim]' \
 && useradd --system --home-dir /srv/controltower controltower \
 && mkdir -p /var/lib/controltower && chown controltower /var/lib/controltower

USER controltower
ENV CONTROLTOWER_DATA_DIR=/var/lib/controltower
EXPOSE 4318 8501
ENTRYPOINT ["controltower"]
CMD ["--help"]
