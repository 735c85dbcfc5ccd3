"""Broker taps: canonical (or mapped) events from RabbitMQ queues and NATS JetStream consumers into the store."""
