"""Named engine operations run next to the engine, through either backend, errors intact."""

import anyio
import pytest
from pydantic import BaseModel

from shared.engine import ops
from shared.errors import NotFound, Unsupported


class SizeRequest(BaseModel):
    model: str | None = None


class SizeResult(BaseModel):
    native: int


@ops.op("test-native-size")
def _native(engine, req: SizeRequest) -> SizeResult:
    if req.model == "refuse":
        raise Unsupported("refused on purpose")
    return SizeResult(native=engine.native_size(req.model))


def _backend(app):
    return app.state.backend


def test_an_operation_runs_on_the_engine_through_each_backend(make_app):
    backend = _backend(make_app())
    got = anyio.run(backend.op, "test-native-size", SizeRequest())
    assert isinstance(got, SizeResult) and got.native == backend.native_size(None)


def test_errors_cross_as_themselves(make_app):
    backend = _backend(make_app())
    with pytest.raises(Unsupported):
        anyio.run(backend.op, "test-native-size", SizeRequest(model="refuse"))
    with pytest.raises(NotFound):
        anyio.run(backend.op, "no-such-operation", SizeRequest())
