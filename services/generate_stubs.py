"""Generate `example_pb2` / `example_pb2_grpc` for both services (`make stubs`).

The greeter's proto is the source of truth. books-api calls it, but its image is built from its own
folder, so it carries a copy of the proto; this script first makes that copy equal to the source.
The Dockerfiles run the same protoc command on their own copy: images never use stubs made here.
"""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

SERVICES = Path(__file__).resolve().parent
SOURCE_PROTO = SERVICES / "greeter" / "protos" / "example.proto"
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
    for service_dir in SERVICE_DIRS:
        proto = service_dir / "protos" / "example.proto"
        if proto != SOURCE_PROTO and proto.read_bytes() != SOURCE_PROTO.read_bytes():
            shutil.copyfile(SOURCE_PROTO, proto)
            print(f"synced {proto.relative_to(SERVICES.parent)}", file=sys.stderr)
        generate(service_dir, service_dir / "src")
        print(f"generated {', '.join(GENERATED)} in {service_dir.relative_to(SERVICES.parent)}/src")


if __name__ == "__main__":
    main()
