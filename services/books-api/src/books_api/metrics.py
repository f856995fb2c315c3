"""books-api's own Prometheus metrics; the requests' (RED) are every HTTP service's
(service_common.flask_app), served with these on /metrics and on the metrics port."""

from prometheus_client import Counter

GREETER_CALLS = Counter("greeter_calls_total", "Calls to ExampleService by outcome", ["outcome"])
