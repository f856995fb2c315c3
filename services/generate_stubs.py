"""Generate `example_pb2` / `example_pb2_grpc` from protos/ into common/src/ (`make stubs`).

Both services import them from there (the images' PYTHONPATH, /app/src, holds service_common, the
stubs and the service's package). The Dockerfile's build-base stage runs the same protoc command:
images never use stubs made here.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

SERVICES = Path(__file__).resolve().parent
PROTOS = SERVICES / "protos"
OUT_DIR = SERVICES / "common" / "src"
GENERATED = ("example_pb2.py", "example_pb2_grpc.py")


def protoc_args(proto_dir: Path, out_dir: Path) -> list[str]:
    """The protoc command line, also spelled out in the Dockerfile's build-base stage."""
    return [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_dir / "example.proto"),
    ]


def generate(out_dir: Path) -> None:
    """Write the stubs to out_dir (top-level modules, as protoc names them)."""
    if protoc.main(protoc_args(PROTOS, out_dir)) != 0:
        raise SystemExit(f"protoc failed for {PROTOS / 'example.proto'}")


def main() -> None:
    generate(OUT_DIR)
    print(
        f"generated {', '.join(GENERATED)} in {OUT_DIR.relative_to(SERVICES.parent)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
