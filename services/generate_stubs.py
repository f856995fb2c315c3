"""Generate `example_pb2` / `example_pb2_grpc` for both services (`make stubs`).

Each service folder is its own image build context, so what both need is carried by both: the
proto and consul_registration.py. The greeter's files are the source; this script first makes
books-api's copies equal to them.
The Dockerfiles run the same protoc command on their own copy: images never use stubs made here.
"""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

SERVICES = Path(__file__).resolve().parent
# Files books-api carries as copies of the greeter's (paths relative to a service folder).
SHARED = ("protos/example.proto", "src/consul_registration.py")
SERVICE_DIRS = (SERVICES / "greeter", SERVICES / "books-api")
GENERATED = ("example_pb2.py", "example_pb2_grpc.py")


def protoc_args(proto_dir: Path, out_dir: Path) -> list[str]:
    """The protoc command line, also spelled out in each Dockerfile's build stage."""
    return [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_dir / "example.proto"),
    ]


def generate(service_dir: Path, out_dir: Path) -> None:
    """Write the stubs of one service's proto to out_dir (top-level modules, as protoc names)."""
    if protoc.main(protoc_args(service_dir / "protos", out_dir)) != 0:
        raise SystemExit(f"protoc failed for {service_dir / 'protos' / 'example.proto'}")


def main() -> None:
    for name in SHARED:
        source, copy = SERVICES / "greeter" / name, SERVICES / "books-api" / name
        if copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)
            print(f"synced {copy.relative_to(SERVICES.parent)}", file=sys.stderr)
    for service_dir in SERVICE_DIRS:
        generate(service_dir, service_dir / "src")
        print(f"generated {', '.join(GENERATED)} in {service_dir.relative_to(SERVICES.parent)}/src")


if __name__ == "__main__":
    main()
