"""What every service shares: settings base, JSON logs, Consul registration, the gRPC server and the
Flask app and gunicorn hooks, RED metrics and traces."""
