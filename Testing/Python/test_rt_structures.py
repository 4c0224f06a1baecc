"""Structure templates (TG-263 names, colours, codes; shipped and user JSON/CSV), the review status
todo -> drafted -> reviewed -> approved, and approved structures locked against AI writes (structure
set files and Slicer segmentation nodes)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.metrics import load_preset
from medsegsuite.rt import StructureSet, load_template
from medsegsuite.volume import Geometry


def test_segrap_template_covers_the_45_oars_with_tg263_names_and_codes():
    t = load_template("segrap")
    preset = load_preset("segrap")
    oars = [s.name for s in preset.structures if not s.name.startswith("GTV")]
    assert len(oars) == 45
    for name in oars:  # every SegRap name maps onto one template structure
        assert t.find(name) is not None, name
    assert len({t.find(n).name for n in oars}) == 45
    assert t.find("TemporalLobe_L").name == "Lobe_Temporal_L"
    assert t.find("Chiasm").code == ("SCT", "244453006", "Optic chiasm")
    assert t.find("GTVnd").name == "GTVn" and t.find("GTVnd").interpreted_type == "GTV"
    own = [s.name for s in t.structures if not s.tg263]
    assert "IAC_L" in own and "Parotid_L" not in own
    for name in ("abdomen", "brain"):
        tt = load_template(name)
        assert all(len(s.color) == 3 and s.code for s in tt.structures)
    assert load_template("abdomen").find("liver").name == "Liver"


def test_user_templates_json_and_csv(tmp_path):
    j = tmp_path / "mine.json"
    j.write_text(json.dumps({"name": "mine", "structures": [
        {"name": "Parotid_L", "color": "#c29bde", "code": ["SCT", "45289007", "Parotid gland"]}, "Cord"]}))
    t = load_template(j)
    assert t.names == ["Parotid_L", "Cord"] and abs(t.find("parotid l").color[0] - 0xc2 / 255) < 1e-9
    c = tmp_path / "mine.csv"
    c.write_text("name,color,code_scheme,code_value,code_meaning,interpreted_type,aliases\n"
                 "Lèvres,255 0 0,SCT,81083006,Lips,ORGAN,lips|Lippen\nPTV_High,,,,,PTV,\n", encoding="utf-8")
    t = load_template(c)
    assert t.find("Lippen").name == "Lèvres" and t.find("PTV_High").interpreted_type == "PTV"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"structures": [{"name": "A", "interpreted_type": "ORGANS"}]}))
    with pytest.raises(InputError, match="interpreted_type"):
        load_template(bad)
    bad.write_text(json.dumps({"structures": ["A", "a"]}))
    with pytest.raises(InputError, match="names both"):
        load_template(bad)


def test_status_workflow_and_ai_lock(tmp_path):
    g = Geometry((12, 10, 6))
    ss = StructureSet(load_template("abdomen"), g)
    m = np.zeros(g.shape, bool)
    m[2:6, 2:6, 1:4] = True
    with pytest.raises(InputError, match="no contour yet"):
        ss.set_status("Liver", "drafted", "Dr A")
    ss.write_ai("liver", m, "CoSAM (liver)")  # an alias finds the template's name
    assert ss.state("Liver") == "drafted" and ss.next_structure() == "Liver"
    with pytest.raises(InputError, match="must be reviewed before it can be approved"):
        ss.set_status("Liver", "approved", "Dr A")
    ss.set_status("Liver", "reviewed", "Dr A")
    ss.set_status("Liver", "approved", "Dr B")
    assert ss.next_structure() == "GTVp"
    path = ss.save(tmp_path / "plan.seg.nrrd")
    again = StructureSet.load(path)
    assert again.state("Liver") == "approved" and np.array_equal(again.seg.masks["Liver"], m)
    assert [h["by"] for h in again.status["Liver"]["history"]] == ["CoSAM (liver)", "Dr A", "Dr B"]
    with pytest.raises(InputError, match="approved and locked against AI writes"):
        again.write_ai("Liver", ~m, "box propagation")
    assert np.array_equal(again.seg.masks["Liver"], m)  # nothing changed
    again.set_status("Liver", "reviewed", "Dr B", "reopened")  # stepping back is allowed
    again.write_ai("Liver", ~m, "box propagation")
    assert again.state("Liver") == "drafted"


def test_cli_refuses_to_draft_an_approved_structure(tmp_path, capsys):
    from medsegsuite.cli import main
    from medsegsuite.io import write_image
    from medsegsuite.volume import Volume

    img = write_image(Volume(np.zeros((12, 10, 6), np.int16)), tmp_path / "ct.nrrd")
    out = tmp_path / "plan.seg.nrrd"
    assert main(["structures", "init", "--template", "abdomen", "--image", str(img), "--out", str(out)]) == 0
    ss = StructureSet.load(out)
    m = np.zeros((12, 10, 6), bool)
    m[3:7, 3:7, 2:4] = True
    ss.write_ai("Liver", m, "test")
    for st in ("reviewed", "approved"):
        ss.set_status("Liver", st, "Dr A")
    ss.save(out)
    rc = main(["structures", "draft", str(out), "--image", str(img), "--structure", "Liver", "--box", "1", "1", "5", "5",
               "--slice", "2"])
    assert rc == 2 and "locked against AI writes" in capsys.readouterr().err
    assert main(["structures", "status", str(out)]) == 0
    assert "Liver              approved" in capsys.readouterr().out


slicer = pytest.importorskip("slicer")


def test_panel_logic_walks_a_template_and_approval_locks_the_segment():
    from MedSegSuiteLib import segments as S
    from MedSegSuiteLib import structures as T

    g = Geometry((12, 10, 6))
    scene = slicer.vtkMRMLScene()
    node = S.new_segmentation_node(scene, "plan", g)
    t = load_template("abdomen")
    m = np.zeros(g.shape, bool)
    m[2:6, 2:6, 1:4] = True
    S.write_masks(node, {"liver": m}, g)  # a prior draft under another name
    T.apply_template(node, t)
    assert S.segment_names(node)[0] == "Liver" and set(t.names) <= set(S.segment_names(node))
    assert T.status(node, "Liver") == "drafted" and T.status(node, "Spleen") == "todo"
    assert T.next_structure(node, t) == "Liver"
    with pytest.raises(InputError, match="no contour yet"):
        T.set_status(node, "Spleen", "drafted")
    T.set_status(node, "Liver", "reviewed")
    T.set_status(node, "Liver", "approved")
    assert T.next_structure(node, t) == "GTVp"
    with pytest.raises(InputError, match="locked or marked finished"):
        S.write_masks(node, {"Liver": ~m}, g)  # an AI write into the approved structure
    S.write_masks(node, {"Spleen": ~m}, g, overwrite="all")  # a neighbour's write may not cut into it
    np.testing.assert_array_equal(S.read_masks(node, g, ["Liver"])["Liver"], m)
    T.set_status(node, "Liver", "reviewed")  # reopened: writable again
    S.write_masks(node, {"Liver": m[::-1]}, g)
    T.mark_drafted(node, "Liver")
    assert T.status(node, "Liver") == "drafted"
