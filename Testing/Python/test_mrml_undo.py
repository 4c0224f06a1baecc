"""Undo/redo of AI writes next to the user's own edits, on slicer-core's real MRML classes.

A "foreign edit" here is what a Segment Editor effect does: save the editor's undo state, then
change a segment's labelmap through the Segmentations logic. The Segment Editor's own undo stack is
slicer-core's `vtkSlicerSegmentEditorLogic` (the object behind the editor widget in Slicer 5.10).
"""
import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegSuiteLib import segments as S  # noqa: E402
from MedSegSuiteLib import undo as U  # noqa: E402
from medsegsuite.errors import InputError  # noqa: E402
from medsegsuite.volume import Geometry  # noqa: E402

G = Geometry((14, 12, 10), (0.9, 0.9, 2.5), (3.0, -7.0, 11.0))


def box(lo, hi):
    m = np.zeros(G.shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def stroke(node, name, mask):
    """A user's edit that does not go through MedSegSuite (Segment Editor paint, another module)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(S.oriented_image(mask.astype(np.uint8), G), node,
                                            S.segment_id(node, name), logic.MODE_REPLACE)


def content(node):
    return {n: S.read_masks(node, G, [n])[n] for n in S.segment_names(node)}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def node():
    scene = slicer.vtkMRMLScene()
    n = S.new_segmentation_node(scene, "seg", G)
    yield n
    U.forget(n)


def test_undo_redo_walk_through_ai_steps(node):
    S.write_masks(node, {"liver": box((1, 1, 1), (6, 6, 4))}, G)
    first = content(node)
    S.write_masks(node, {"liver": box((2, 2, 2), (9, 9, 6)), "tumour": box((3, 3, 3), (4, 4, 4))}, G)
    second = content(node)
    assert S.can_undo(node) and not S.can_redo(node)
    assert S.undo_last_write(node) and same(content(node), first)
    assert S.can_redo(node)
    assert S.redo_last_write(node) and same(content(node), second)  # redo restores exactly
    assert not S.redo_last_write(node)
    assert S.undo_last_write(node) and S.undo_last_write(node)
    assert S.segment_names(node) == []
    assert not S.undo_last_write(node) and not S.can_undo(node)
    assert S.redo_last_write(node) and same(content(node), first)


def test_undo_after_a_foreign_edit_is_refused_and_keeps_the_edit(node):
    S.write_masks(node, {"liver": box((1, 1, 1), (6, 6, 4))}, G)
    painted = S.read_masks(node, G, ["liver"])["liver"] | box((8, 8, 6), (11, 11, 8))
    stroke(node, "liver", painted)
    assert U.changed_since_write(node)
    with pytest.raises(InputError, match="Segment Editor's Undo"):
        S.undo_last_write(node)
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], painted)  # nothing discarded
    # the next AI write starts a new chain: its undo returns to the painted state, and no further
    S.write_masks(node, {"tumour": box((2, 2, 2), (4, 4, 3))}, G)
    assert S.undo_last_write(node)
    assert S.segment_names(node) == ["liver"]
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], painted)
    assert not S.undo_last_write(node)


def test_redo_after_a_foreign_edit_is_refused(node):
    S.write_masks(node, {"liver": box((1, 1, 1), (6, 6, 4))}, G)
    S.write_masks(node, {"liver": box((1, 1, 1), (9, 9, 4))}, G)
    assert S.undo_last_write(node)
    painted = box((0, 0, 0), (3, 3, 3))
    stroke(node, "liver", painted)
    assert not S.can_redo(node)
    with pytest.raises(InputError):
        S.redo_last_write(node)
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], painted)


def test_renaming_a_segment_counts_as_an_edit_but_showing_it_in_3d_does_not(node):
    S.write_masks(node, {"liver": box((1, 1, 1), (6, 6, 4))}, G)
    node.CreateClosedSurfaceRepresentation()  # "Show 3D": a derived representation, not an edit
    assert not U.changed_since_write(node)
    assert S.undo_last_write(node) and S.segment_names(node) == []
    S.write_masks(node, {"liver": box((1, 1, 1), (6, 6, 4))}, G)
    seg = node.GetSegmentation()
    seg.GetSegment(S.segment_id(node, "liver")).SetName("Liver (checked)")
    with pytest.raises(InputError):
        S.undo_last_write(node)
    assert S.segment_names(node) == ["Liver (checked)"]


def test_amend_replaces_the_last_step(node):
    """CoSAM's round review rewrites the result without adding a step: Undo returns before the result."""
    S.write_masks(node, {"liver": box((1, 1, 1), (3, 3, 3))}, G)
    before = content(node)
    S.write_masks(node, {"liver": box((1, 1, 1), (9, 9, 6))}, G)
    S.write_masks(node, {"liver": box((2, 2, 2), (5, 5, 5))}, G, amend=True)
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], box((2, 2, 2), (5, 5, 5)))
    assert S.undo_last_write(node) and same(content(node), before)


def test_ai_write_is_one_step_in_the_segment_editors_stack(node):
    """Ctrl+Z in the Segment Editor reverts the AI write alone, not the user's stroke before it."""
    scene = node.GetScene()
    editor_node = slicer.vtkMRMLSegmentEditorNode()
    scene.AddNode(editor_node)
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    editor.SetSegmentEditorNode(editor_node)
    editor.SetSegmentationNode(node)
    S.write_masks(node, {"liver": box((1, 1, 1), (4, 4, 3))}, G, undoable=False)
    editor.SaveStateForUndo()  # what a Segment Editor effect does before it paints
    painted = box((1, 1, 1), (4, 4, 3)) | box((8, 8, 6), (10, 10, 8))
    stroke(node, "liver", painted)

    def provider(seg_node):
        return [editor] if seg_node is node else []

    U.register_editor_stack(provider)
    try:
        S.write_masks(node, {"tumour": box((5, 5, 2), (7, 7, 4))}, G)
    finally:
        U.unregister_editor_stack(provider)
    assert editor.CanUndo()
    editor.Undo()
    assert S.segment_names(node) == ["liver"]
    np.testing.assert_array_equal(S.read_masks(node, G, ["liver"])["liver"], painted)  # the stroke survives


def test_amend_keeps_a_new_segments_id_and_colour(node):
    S.write_masks(node, {"blob": box((1, 1, 1), (9, 9, 6))}, G, colors={"blob": (0.2, 0.4, 0.6)})
    sid = S.segment_id(node, "blob")
    S.write_masks(node, {"blob": box((2, 2, 2), (5, 5, 5))}, G, amend=True)
    assert S.segment_id(node, "blob") == sid  # the Segment Editor's selection stays valid
    np.testing.assert_allclose(node.GetSegmentation().GetSegment(sid).GetColor(), (0.2, 0.4, 0.6))
    assert S.undo_last_write(node) and S.segment_names(node) == []
