"""What books-api and the greeter share: settings base, JSON logs, Consul registration."""
