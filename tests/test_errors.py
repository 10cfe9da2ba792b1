"""The one status table and pydantic conversion."""

import pytest
from pydantic import BaseModel, Field, ValidationError

from shared import errors as E


@pytest.mark.parametrize("err,status", [
    (E.ValidationFailed("x"), 422), (E.BadImage("x"), 400), (E.Unsupported("x"), 400),
    (E.Unauthorized("x"), 401), (E.ModelNotFound("x"), 404), (E.SamplerNotFound("x"), 404),
    (E.PayloadTooLarge("x"), 413), (E.RateLimited("x"), 429), (E.StorageFailed("x"), 502),
    (E.GenerationFailed("x"), 500), (E.Unavailable("x"), 503),
])
def test_status_table(err, status):
    assert E.status_of(err) == status


def test_from_pydantic_lists_every_field():
    class M(BaseModel):
        prompt: str
        steps: int = Field(ge=1)

    with pytest.raises(ValidationError) as info:
        M.model_validate({"steps": 0})
    err = E.from_pydantic(info.value)
    assert {f.field for f in err.fields} == {"prompt", "steps"}
    assert any(f.message == "field required" for f in err.fields)
