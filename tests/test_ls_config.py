"""Parsing Label Studio label configs into the project's class list."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from label_assistant.labelstudio.config import (
    LabelConfig,
    LabelConfigError,
    UnknownLabelError,
    config_hash,
    parse_label_config,
)

SIMPLE = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Background" background="#0000ff"/>
    <Label value="Cell" background="#ff0000"/>
  </BrushLabels>
</View>"""

MULTI = """<View>
  <Header value="Segment"/>
  <Image name="img" value="$picture"/>
  <Choices name="quality" toName="img"><Choice value="good"/><Choice value="bad"/></Choices>
  <BrushLabels name="brush" toName="img">
    <Label value="Background"/>
    <Label value="Cell"/>
    <Label value="Nucleus"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="img">
    <Label value="Nucleus"/>
    <Label value="Membrane"/>
  </PolygonLabels>
  <TextArea name="notes" toName="img"/>
</View>"""


def test_simple_config():
    cfg = parse_label_config(SIMPLE)
    assert isinstance(cfg, LabelConfig)
    assert cfg.to_name == "image" and cfg.data_key == "image"
    assert cfg.class_names == ("Cell",) and cfg.n_classes == 1
    assert cfg.background_label == "Background"
    assert cfg.labels == ("Background", "Cell")
    assert cfg.class_index("Background") == 0 and cfg.class_index("Cell") == 1
    assert cfg.class_name(1) == "Cell"
    assert cfg.brush_control is not None and cfg.brush_control.name == "tag"
    assert cfg.brush_control.result_type == "brushlabels"
    assert len(cfg.controls) == 1 and cfg.controls[0].to_name == ("image",)
    assert re.fullmatch(r"[0-9a-f]{64}", cfg.config_hash)


def test_several_controls_first_appearance_order():
    cfg = parse_label_config(MULTI)
    assert cfg.to_name == "img" and cfg.data_key == "picture"
    assert [c.name for c in cfg.controls] == ["brush", "poly"]  # Choices/TextArea ignored
    assert [c.type for c in cfg.controls] == ["BrushLabels", "PolygonLabels"]
    assert cfg.class_names == ("Cell", "Nucleus", "Membrane")
    assert [cfg.class_index(x) for x in ("Background", "Cell", "Nucleus", "Membrane")] == [
        0, 1, 2, 3]
    assert cfg.control("poly").labels == ("Nucleus", "Membrane")
    assert cfg.control("quality") is None
    assert cfg.brush_control.name == "brush"


def test_polygon_only_has_no_brush_control():
    xml = ('<View><Image name="i" value="$x"/><PolygonLabels name="p" toName="i">'
           '<Label value="Background"/><Label value="A"/></PolygonLabels></View>')
    cfg = parse_label_config(xml)
    assert cfg.brush_control is None and cfg.class_names == ("A",)


def test_unknown_label_and_index():
    cfg = parse_label_config(SIMPLE)
    for bad in ("cell", "Nucleus", "", None):
        with pytest.raises(UnknownLabelError):
            cfg.class_index(bad)
    with pytest.raises(UnknownLabelError):
        cfg.class_name(2)
    assert issubclass(UnknownLabelError, LabelConfigError)
    assert issubclass(LabelConfigError, ValueError)


def test_custom_background_label_and_alias():
    xml = ('<View><Image name="i" value="$x"/><BrushLabels name="b" toName="i">'
           '<Label value="bg"/><Label value="Cell" alias="C"/></BrushLabels></View>')
    cfg = parse_label_config(xml, background_label="bg")
    assert cfg.class_names == ("Cell",)
    assert cfg.class_index("bg") == 0 and cfg.class_index("C") == 1
    with pytest.raises(LabelConfigError, match="background label 'Background'"):
        parse_label_config(xml)


def test_case_insensitive_tags():
    xml = ('<view><image name="i" value="$x"/><brushlabels name="b" toName="i">'
           '<label value="Background"/><label value="A"/></brushlabels></view>')
    assert parse_label_config(xml).class_names == ("A",)


def test_several_images():
    xml = ('<View><Image name="a" value="$a"/><Image name="b" value="$b"/>'
           '<BrushLabels name="ba" toName="a"><Label value="Background"/><Label value="X"/>'
           '</BrushLabels><BrushLabels name="bb" toName="b"><Label value="Background"/>'
           '<Label value="Y"/></BrushLabels></View>')
    with pytest.raises(LabelConfigError, match="image_name"):
        parse_label_config(xml)
    cfg = parse_label_config(xml, image_name="b")
    assert cfg.to_name == "b" and cfg.class_names == ("Y",) and cfg.brush_control.name == "bb"
    with pytest.raises(LabelConfigError, match="'c'"):
        parse_label_config(xml, image_name="c")


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("not xml at all <", "not XML"),
        ("<View><Image name='i' value='$x'/>", "not XML"),
        ("<View><Text name='t' value='$t'/></View>", "no <Image>"),
        ("<View><Image name='i' value='$x'/><Choices name='c' toName='i'>"
         "<Choice value='a'/></Choices></View>", "no BrushLabels or PolygonLabels"),
        ("<View><Image name='i' value='$x'/><BrushLabels name='b' toName='i'>"
         "<Label value='Cell'/></BrushLabels></View>", "no background label"),
        ("<View><Image name='i' value='$x'/><BrushLabels name='b' toName='other'>"
         "<Label value='Background'/></BrushLabels></View>", "not an <Image>"),
        ("<View><Image name='i' value='$x'/><BrushLabels name='b' toName='i'>"
         "</BrushLabels></View>", "no <Label>"),
        ("<View><Image name='i' value='$x'/><BrushLabels name='b' toName='i'>"
         "<Label value='A'/><Label value='A'/></BrushLabels></View>", "twice"),
        ("<View><Image name='i' value='x'/><BrushLabels name='b' toName='i'>"
         "<Label value='Background'/></BrushLabels></View>", r"not a \$field"),
        ("<View><Image value='$x'/></View>", "no name"),
        ("<View><Image name='i' value='$x'/><BrushLabels name='b'>"
         "<Label value='Background'/></BrushLabels></View>", "no toName"),
    ],
)
def test_unservable_configs(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_only_background_is_zero_classes():
    xml = ('<View><Image name="i" value="$x"/><BrushLabels name="b" toName="i">'
           '<Label value="Background"/></BrushLabels></View>')
    cfg = parse_label_config(xml)
    assert cfg.n_classes == 0 and cfg.class_names == ()


def test_config_hash_ignores_whitespace_only():
    reindented = re.sub(r">\s*<", ">\n\n      <", SIMPLE)
    assert config_hash(reindented) == config_hash(SIMPLE)
    assert config_hash("  " + SIMPLE.replace("  ", "\t") + "\n") == config_hash(SIMPLE)
    assert config_hash(SIMPLE.replace("Cell", "Cells")) != config_hash(SIMPLE)
    assert parse_label_config(reindented) == parse_label_config(SIMPLE)


def test_real_project_config(ls_fixtures):
    payload = json.loads((ls_fixtures / "015_POST_webhook_ANNOTATION_CREATED.json").read_text())
    project = payload["json"]["project"]
    cfg = parse_label_config(project["label_config"])
    parsed = project["parsed_label_config"]["tag"]  # Label Studio's own parse
    assert cfg.brush_control.name == "tag"
    assert cfg.to_name == parsed["to_name"][0] == "image"
    assert cfg.labels == tuple(parsed["labels"])


_label = st.text(alphabet="abcdefghijXYZ _-0123456789", min_size=1, max_size=8).filter(
    lambda s: s.strip() == s and s != "Background"
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_label, min_size=0, max_size=6, unique=True),
       st.lists(_label, min_size=0, max_size=6, unique=True),
       st.integers(0, 6), st.sampled_from(["", " ", "\n    "]))
def test_classes_in_first_appearance_order(brush, poly, bg_at, ws):
    brush = [*brush[:bg_at], "Background", *brush[bg_at:]]
    labels = "".join(f'{ws}<Label value="{v}"/>' for v in brush)
    plabels = "".join(f'{ws}<Label value="{v}"/>' for v in poly)
    xml = (f'<View>{ws}<Image name="im" value="$image"/>{ws}<BrushLabels name="b" toName="im">'
           f"{labels}{ws}</BrushLabels>")
    if poly:
        xml += f'{ws}<PolygonLabels name="p" toName="im">{plabels}{ws}</PolygonLabels>'
    xml += f"{ws}</View>"
    cfg = parse_label_config(xml)
    expected = list(dict.fromkeys([v for v in brush if v != "Background"] + poly))
    assert list(cfg.class_names) == expected
    assert [cfg.class_index(v) for v in expected] == list(range(1, len(expected) + 1))
    assert cfg.class_index("Background") == 0
    assert cfg.config_hash == config_hash(re.sub(r">\s+<", "><", xml))


# --- configs from the network (issue: fuzzing the backend) --------------------------------

_NAMESPACED = (
    '<v:View xmlns:v="urn:x"><v:Image name="image" value="$image"/><v:BrushLabels name="tag" '
    'toName="image"><v:Label value="Background"/><v:Label value="Cell"/></v:BrushLabels>'
    "</v:View>"
)


def test_a_namespaced_config_reads_as_its_local_names():
    """Was a KeyError (in ``Control.result_type``) on the first use of its brush control."""
    config = parse_label_config(_NAMESPACED)
    assert config.brush_control is not None
    assert config.brush_control.type == "BrushLabels"
    assert config.brush_control.result_type == "brushlabels"
    assert config.class_names == ("Cell",)


def test_entity_expansion_is_refused_cheaply():
    """A "billion laughs" (10^9 expansions) is refused at its DTD, without expanding."""

    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                        for i in range(1, 10))
              + ']><View><Image name="image" value="$image"/><BrushLabels name="tag" '
              'toName="image"><Label value="Background"/><Label value="&lol9;"/></BrushLabels>'
              "</View>")
    external = ('<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                + SIMPLE.replace('value="Cell"', 'value="&e;"'))
    for xml in (laughs, external):
        # Refused at the DTD, before any entity is expanded (no timing asserted: noisy CI).
        with pytest.raises(LabelConfigError, match="DTD"):
            parse_label_config(xml)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["<View>", "</View>", '<Image name="image" value="$image"/>',
                              '<Image name="image" value="$image">', "<Image/>",
                              '<BrushLabels name="tag" toName="image">', "</BrushLabels>",
                              '<Label value="Background"/>', '<Label value="Cell"/>',
                              '<Label value="Cell" alias="Background"/>', "<Label/>",
                              '<Label value="Background" alias="Cell"/>', '<x:a xmlns:x="u">',
                              "</x:a>", "<!-- c -->", "<?pi x?>", "&amp;", "&bogus;", "\x00",
                              '<PolygonLabels name="tag" toName="image">', "</PolygonLabels>",
                              '<v:BrushLabels xmlns:v="u" name="b" toName="image">',
                              "</v:BrushLabels>"]),
             max_size=12).map("".join)))
def test_anything_unusable_is_a_label_config_error(xml):
    """The contract: a LabelConfig, or LabelConfigError, for any text (never another error)."""
    try:
        config = parse_label_config(xml)
    except LabelConfigError:
        return
    assert config.to_name and config.controls
    for control in config.controls:
        assert control.result_type in ("brushlabels", "polygonlabels")
    for label in config.labels:
        assert config.class_index(label) in range(config.n_classes + 1)


def test_labeling_instructions_name_the_classes_and_background_escaped():
    from label_assistant.labelstudio.config import labeling_instructions

    settings = labeling_instructions(["Nucleus", "Cell <a>"], background_label="Back & ground")
    assert settings["show_instruction"] is True
    text = settings["expert_instruction"]
    assert "Nucleus, Cell &lt;a&gt;" in text and "Back &amp; ground" in text
    assert "<a>" not in text and "Quarantined" in text
