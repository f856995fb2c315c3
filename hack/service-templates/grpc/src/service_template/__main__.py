"""`python -m service_template`: the image's entrypoint."""

from service_common.grpc_server import serve

from service_template import config
from service_template.server import build

serve(build(config.load()))
