"""``/vectors``: the GeoJSON layers beside a local catalog (the demo's ``fields.geojson``).

A local catalog folder may hold vector layers next to its items (``terratiler demo`` writes
the field parcels as ``fields.geojson``); the viewer lists them here and draws them, so a
field can be picked on the map. Only ``*.geojson`` files at the top of the folder are
served, by a name that cannot leave it; a remote catalog (a STAC API URL) has none.
"""

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from app.dependencies import SettingsDep
from app.errors import NotFoundError
from app.settings import Settings

router = APIRouter()

#: A layer name: letters, digits, ``_`` and ``-`` (no dots, no slashes).
NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
GEOJSON = "application/geo+json"


def vector_files(settings: Settings) -> dict[str, Path]:
    """The GeoJSON layers beside the catalog, by name (the file's stem).

    Args:
        settings: The service settings (``catalog``).

    Returns:
        ``{name: path}`` of the ``*.geojson`` files at the top of a local catalog folder,
        sorted by name; empty for a remote catalog or a missing folder.
    """
    if settings.catalog_is_remote:
        return {}
    folder = Path(settings.catalog)
    if not folder.is_dir():
        return {}
    return {
        path.stem: path
        for path in sorted(folder.glob("*.geojson"))
        if path.is_file() and NAME.match(path.stem)
    }


@router.get("/vectors", summary="The vector layers beside the catalog")
def list_vectors(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The GeoJSON layers of a local catalog folder (e.g. the demo's field parcels)."""
    return {
        "vectors": [
            {
                "name": name,
                "href": str(request.url_for("vector", name=name)),
                "type": GEOJSON,
            }
            for name in vector_files(settings)
        ]
    }


@router.get(
    "/vectors/{name}.geojson",
    name="vector",
    summary="One vector layer as GeoJSON",
    response_class=FileResponse,
    responses={404: {"description": "No layer of that name."}},
)
def get_vector(
    name: Annotated[str, PathParam(description="The layer's name, e.g. `fields`.")],
    settings: SettingsDep,
) -> FileResponse:
    """The layer's GeoJSON file as the catalog folder holds it (EPSG:4326)."""
    path = vector_files(settings).get(name) if NAME.match(name) else None
    if path is None:
        raise NotFoundError(f"name: no vector layer '{name}'")
    return FileResponse(path, media_type=GEOJSON)
