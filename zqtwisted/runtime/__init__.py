"""The runtime: broker connection, broker interface, runners, workers, service, retries, dead letters, publishing."""
