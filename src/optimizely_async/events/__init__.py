"""User events, their wire payload, the batching queue and the dispatcher."""
