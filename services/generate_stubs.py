"""Generate `example_pb2` / `example_pb2_grpc` from protos/ into common/src/ (`make stubs`), and
each gRPC service's own API, `<service>/protos/*.proto`, into `<service>/src/`.

The services import them from there (the images' PYTHONPATH, /app/src, holds service_common, the
stubs and the service's package). The Dockerfile's build stages run the same protoc commands:
images never use stubs made here.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

SERVICES = Path(__file__).resolve().parent
PROTOS = SERVICES / "protos"
OUT_DIR = SERVICES / "common" / "src"
GENERATED = ("example_pb2.py", "example_pb2_grpc.py")


def protoc_args(proto_dir: Path, out_dir: Path, protos: list[Path] | None = None) -> list[str]:
    """The protoc command line, also spelled out in the Dockerfile's build stages."""
    return [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(proto) for proto in protos or [proto_dir / "example.proto"]),
    ]


def generate(out_dir: Path) -> None:
    """Write the stubs to out_dir (top-level modules, as protoc names them)."""
    if protoc.main(protoc_args(PROTOS, out_dir)) != 0:
        raise SystemExit(f"protoc failed for {PROTOS / 'example.proto'}")


def generate_services() -> list[Path]:
    """Each service's own protos into its src/; the folders it wrote into."""
    written = []
    for proto_dir in sorted(SERVICES.glob("*/protos")):
        out_dir = proto_dir.parent / "src"
        if protoc.main(protoc_args(proto_dir, out_dir, sorted(proto_dir.glob("*.proto")))) != 0:
            raise SystemExit(f"protoc failed for {proto_dir}")
        written.append(out_dir)
    return written


def main() -> None:
    generate(OUT_DIR)
    print(
        f"generated {', '.join(GENERATED)} in {OUT_DIR.relative_to(SERVICES.parent)}",
        file=sys.stderr,
    )
    for out_dir in generate_services():
        where = out_dir.relative_to(SERVICES.parent)
        print(f"generated the stubs of {out_dir.parent.name}'s protos in {where}", file=sys.stderr)


if __name__ == "__main__":
    main()
