"""service-template: an HTTP service (Flask under gunicorn) of the consul-microservices catalog."""
