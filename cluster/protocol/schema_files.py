"""The JSON Schema files of the task models, generated from them and committed under ``schema/``.

Applications in any language validate against these files. ``python -m cluster.protocol.schema_files``
rewrites them; a test fails when a model changed and the files were not regenerated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from cluster.protocol.gpt import GPTTaskArgs, GPTTaskResponse
from cluster.protocol.sd import SDTaskArgs

SCHEMA_DIR = Path(__file__).parent / "schema"
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "gpt-task-args.json": GPTTaskArgs,
    "gpt-task-response.json": GPTTaskResponse,
    "sd-task-args.json": SDTaskArgs,
}


def render_schema(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_MODELS.items():
        path = directory / name
        path.write_text(render_schema(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(f"wrote {path}")
