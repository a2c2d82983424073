"""The parameter table (service/http/params.py): every request option declared once, and what is
derived from it: reading forms (unknown fields refused with the nearest name), the OpenAPI
request bodies, remove.bg's shared fields and the job store's round trip."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging.geometry import ALIGNMENTS
from service.jobs.store import options_from_json, options_to_json
from service.http.params import BY_NAME, FORM, REMBG, REMOVEBG, TABLE, params
from service.pipeline import Options


def photo(sample_photo) -> dict:
    return {"file": (io.BytesIO(sample_photo.read_bytes()), "photo.jpg")}


@pytest.mark.parametrize("field, nearest", [("outline_widht", "outline_width"), ("format ", "format"),
                                            ("colour", "color"), ("onlymask", "only_mask")])
def test_a_misspelt_field_is_refused_with_the_name_meant(client, sample_photo, field, nearest):
    answer = client.post("/api/bg/remove", data={**photo(sample_photo), field: "5"})
    assert answer.status_code == 400 and answer.json["code"] == "bad_request"
    assert f"takes no field {field!r}: did you mean {nearest!r}?" in answer.json["error"]


def test_an_unknown_field_is_refused_from_the_query_string_too(client, sample_photo):
    answer = client.post("/api/bg/remove?shadw=drop", data=photo(sample_photo))
    assert answer.status_code == 400 and "did you mean 'shadow'?" in answer.json["error"]
    far = client.post("/api/bg/change_color", data={**photo(sample_photo), "color": "red", "zzz": "1"})
    assert far.status_code == 400 and "'zzz'" in far.json["error"] and "did you mean" not in far.json["error"]


def test_a_field_of_another_operation_is_refused_where_it_means_nothing(client, sample_photo):
    answer = client.post("/api/bg/remove", data={**photo(sample_photo), "webhook_url": "http://example.com/"})
    assert answer.status_code == 400 and "webhook_url" in answer.json["error"]


def test_remove_bg_api_takes_unknown_fields_as_remove_bg_does(client, sample_photo):
    answer = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(sample_photo.read_bytes()), "a.jpg"),
                                                "size": "preview", "some_future_field": "1"})
    assert answer.status_code == 200


def test_semitransparency_false_gives_only_opaque_and_clear_pixels_on_both_apis(client, sample_photo):
    """The option added through the table alone (remove.bg's name, the pipeline's hard_edges)."""
    def alpha(path: str, **fields: str) -> np.ndarray:
        field = "image_file" if path.startswith("/v1.0") else "file"
        answer = client.post(path, data={field: (io.BytesIO(sample_photo.read_bytes()), "a.jpg"), **fields})
        assert answer.status_code == 200, answer.json
        return np.asarray(Image.open(io.BytesIO(answer.data)).getchannel("A"))

    for path in ("/api/bg/remove", "/v1.0/removebg"):
        soft, hard = alpha(path, format="png"), alpha(path, format="png", semitransparency="false")
        assert ((soft > 0) & (soft < 255)).sum() > 100, path
        assert set(np.unique(hard)) <= {0, 255}, path
    bad = client.post("/api/bg/remove", data={**photo(sample_photo), "semitransparency": "maybe"})
    assert bad.status_code == 400 and "semitransparency must be true or false" in bad.json["error"]


@pytest.mark.parametrize("fields, words", [
    ({"shadow_opacity": "40"}, "shadow_opacity goes with shadow"),
    ({"shadow": "none", "shadow_opacity": "40"}, "shadow_opacity goes with shadow"),
    ({"outline_color": "red"}, "outline_color goes with outline_width"),
    ({"padding": "5%"}, "padding goes with output_size"),
    ({"only_mask": "true", "shadow": "drop"}, "shadow does not go with only_mask"),
    ({"bg_blur": "2", "crop": "true"}, "bg_blur does not go with crop"),
    ({"outline_width": "201"}, "outline_width must be a whole number from 1 to 200"),
    ({"bg_blur": "0"}, "bg_blur must be a number above 0 to 10"),
    ({"format": "jpg"}, "got 'jpg'; JPEG has no transparency"),
])
def test_what_the_table_says_of_each_field_is_what_a_form_gets(client, sample_photo, fields, words):
    answer = client.post("/api/bg/remove", data={**photo(sample_photo), **fields})
    assert answer.status_code == 400 and words in answer.json["error"], answer.json


def test_the_openapi_bodies_are_the_table(client):
    spec = client.get("/api/bg/openapi.json").json
    for api, path in (("remove", "/api/bg/remove"), ("change_color", "/api/bg/change_color"),
                      ("batch", "/api/bg/batch"), ("jobs", "/api/bg/jobs")):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(schema["properties"]) == set(params(api)) and schema["additionalProperties"] is False
        assert schema["properties"]["refine"]["description"] == BY_NAME["refine"].help
    removebg = spec["paths"]["/v1.0/removebg"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {p.removebg for p in TABLE if p.removebg} <= set(removebg["properties"])
    assert removebg["properties"]["bg_color"]["description"] == BY_NAME["color"].help


def test_every_field_of_the_table_is_documented_and_taken_somewhere():
    for param in TABLE:
        assert param.help and param.apis and set(param.apis) <= {*FORM, REMOVEBG, REMBG}, param.name
        if param.option:
            assert param.option in Options.__dataclass_fields__, param.name
    assert set(ALIGNMENTS) <= set(BY_NAME)


def test_a_jobs_options_come_back_from_the_store_as_they_went_in():
    """Every option, not only those once turned back into tuples by hand."""
    options = Options(fmt="webp", only_mask=False, refine=True, hard_edges=True, crop=True,
                      crop_margin=((10.0, "px"), (5.0, "%"), (10.0, "px"), (5.0, "%")),
                      roi=((1.0, "%"), (2.0, "px"), (90.0, "%"), (80.0, "px")), scale=0.5, position=(0.5, 1.0),
                      background=(10, 20, 30, 128), output_pixels=4_000_000, shrink_to_fit=False, canvas=(800, 600),
                      padding=(12, 8), align=(0.0, 1.0), outline_width=6, outline_color=(255, 255, 0),
                      shadow="contact", shadow_opacity=0.8, bg_blur=0.02, frames="all")
    assert all(getattr(options, name) != getattr(Options(), name) for name in Options.__dataclass_fields__
               if name != "only_mask")
    assert options_from_json(options_to_json(options)) == options
    picture = Image.new("RGB", (4, 4))
    assert options_from_json(options_to_json(Options(background=picture)), picture).background is picture
