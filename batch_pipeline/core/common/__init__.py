"""What every stage shares: the models, the declared settings, the statuses, the errors, safe
names and text, retry backoff."""
