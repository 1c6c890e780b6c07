"""Adapters to the outside world: MongoDB, RabbitMQ."""
