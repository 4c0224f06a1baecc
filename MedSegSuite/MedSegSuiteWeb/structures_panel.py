"""The web panel's Structures (radiotherapy) section: walk a structure template in the page's segmentation.

The same GUI-free logic as the desktop section (``MedSegSuiteLib.structures.TemplateWalk``: template,
status tags, approved = locked) and the same job logic (``SelfCorrectingSAMLogic``): Draft runs CoSAM
with the chosen model, or LiteMedSAM from a typed box on one axial slice with propagation for a
structure without a trained model. Reviewing uses the CoSAM panel's round slider and the viewer.
"""
from __future__ import annotations

from MedSegSuiteLib.jobs import Phase

from .panels import Panel


def parse_box(text: str) -> list[int]:
    """'x0 y0 x1 y1' (spaces or commas) -> four ints."""
    from medsegsuite.errors import InputError

    parts = [p for p in str(text or "").replace(",", " ").split() if p]
    try:
        box = [int(float(p)) for p in parts]
    except ValueError:
        box = []
    if len(box) != 4:
        raise InputError(f"the box must be four numbers x0 y0 x1 y1 (got '{text}')")
    return box


class StructuresPanel(Panel):
    PREFIX, MODULE, TITLE, RUN_TEXT = "rt", "SelfCorrectingSAM", "Structures (radiotherapy)", "Draft"

    def __init__(self, app):
        super().__init__(app)
        from MedSegSuiteLib.structures import TemplateWalk
        from medsegsuite.rt.templates import available_templates

        self.walk = TemplateWalk()
        self._drafting = None
        templates = available_templates()
        self.set(templates=templates, template="abdomen" if "abdomen" in templates else templates[0], rows=[],
                 current="", model="liver", use_box=False, box="", box_slice=0, message="", status_current="",
                 can_draft=False)

    # -- the segmentation the walk works in -------------------------------------------------------
    def segmentation(self, create: bool = False):
        seg = self.app.segmentation_node()
        if seg is None and create:
            from medsegsuite.errors import InputError

            if self.app.volume_node is None:
                raise InputError("load an image first")
            editor = self.app.slicer_app.segmentation_editor
            seg = editor.create_empty_segmentation_node()
            editor.set_active_segmentation(seg, self.app.volume_node)
        return seg

    def refresh(self, message: str | None = None) -> None:
        seg = self.segmentation()
        rows = [{"name": n, "status": st} for n, st in self.walk.rows(seg)]
        st = next((r["status"] for r in rows if r["name"] == self.walk.current), None)
        if message is None and self.walk.current:
            message = f"Current: {self.walk.current} ({st or 'todo'})"
        self.set(rows=rows, current=self.walk.current or "", status_current=st or "",
                 can_draft=self.walk.can_draft(seg), **({"message": message} if message is not None else {}))

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - every refusal is shown in the page, nothing is lost
            self.set(error=str(e))
        else:
            self.set(error="")

    # -- actions ----------------------------------------------------------------------------------
    def apply_template(self) -> None:
        def run():
            self.walk.load(self.get("template"))
            added = self.walk.apply(self.segmentation(create=True))
            self.app.segments_changed()
            self.refresh(f"'{self.walk.template.name}': {len(added)} structure(s) added")
        self._guard(run)

    def select(self, name: str) -> None:
        self._guard(lambda: (self.walk.select(name), self.refresh()))

    def next(self) -> None:
        def run():
            name = self.walk.next(self.segmentation())
            self.refresh(None if name else "Every structure is approved")
        self._guard(run)

    def set_status(self, new: str) -> None:
        from MedSegSuiteLib.structures import set_status

        def run():
            set_status(self.segmentation(), self.walk.require_current(), new)
            self.refresh()
        self._guard(run)

    def run_or_cancel(self) -> None:
        """Draft (never for an approved structure) or, while a draft runs, Cancel."""
        if self.logic.runner.busy or self._starting:
            self.logic.cancel()
            return
        from medsegsuite.errors import InputError

        try:
            name = self.walk.require_current()
            if not self.walk.can_draft(self.segmentation()):
                raise InputError(f"'{name}' is approved and locked against AI writes; reopen it to change it")
        except InputError as e:
            self.set(error=str(e))
            return
        self._drafting = name
        self.launch(self.start)

    def start(self) -> None:
        options = {"structure": self._drafting}
        if self.get("use_box"):
            options.update(box_propagate=True, box=parse_box(self.get("box")), box_slice=int(self.get("box_slice")))
        else:
            options.update(model=self.get("model") or "liver")
        self.logic.start(self.app.volume_node, self.segmentation(create=True), overwrite="none", **options)

    def poll(self) -> None:
        if getattr(self, "_start_error", None) and not self._starting:
            self._drafting = None  # refused before it started: nothing to mark
        super().poll()

    def finished(self, phase: Phase) -> None:
        super().finished(phase)
        if self._drafting is not None and phase == Phase.DONE:
            from MedSegSuiteLib.structures import mark_drafted

            mark_drafted(self.logic.segmentation_node, self._drafting)
        self._drafting = None
        self.refresh()

    # -- widgets ----------------------------------------------------------------------------------
    def build(self) -> None:
        from trame.widgets import html
        from trame.widgets import vuetify3 as v3

        k = self.key
        with v3.VCard(flat=True, classes="pa-2"):
            v3.VCardTitle(self.TITLE)
            with html.Div(classes="d-flex ga-1 align-center"):
                v3.VSelect(label="Template", v_model=(k("template"),), items=(k("templates"),), density="compact")
                v3.VBtn("Add structures", click=self.apply_template, size="small",
                        raw_attrs=['aria-label="Add the template structures"'])
            with v3.VList(density="compact", style="max-height: 320px; overflow-y: auto",
                          raw_attrs=['aria-label="Structures"']):
                v3.VListItem(v_for=f"row in {k('rows')}", key=("row.name",),
                             title=("row.name",), subtitle=("row.status",),
                             active=(f"row.name === {k('current')}",),
                             click=(self.select, "[row.name]"))
            html.Div(f"{{{{ {k('message')} }}}}", raw_attrs=['role="status"'], classes="text-caption my-1")
            v3.VCheckbox(label="From a box + propagation (no trained model)", v_model=(k("use_box"),),
                         density="compact", hide_details=True)
            with html.Div(v_show=(k("use_box"),)):  # (v-show on a d-flex element loses to its !important)
                with html.Div(classes="d-flex ga-1"):
                    v3.VTextField(label="Box x0 y0 x1 y1", v_model=(k("box"),), density="compact")
                    v3.VTextField(label="Axial slice", v_model=(k("box_slice"),), type="number", density="compact")
            with html.Div(v_show=(f"!{k('use_box')}",)):
                v3.VTextField(label="CoSAM model", v_model=(k("model"),), density="compact")
            with html.Div(classes="d-flex ga-1 my-1 flex-wrap"):
                v3.VBtn("Next", click=self.next, size="small", raw_attrs=['aria-label="Next structure"'])
                v3.VBtn(f"{{{{ {k('run_text')} }}}}", click=self.run_or_cancel, size="small", color="primary",
                        disabled=(f"!{k('can_draft')} && !{k('busy')}",), raw_attrs=['aria-label="Draft structure"'])
                v3.VBtn("Reviewed", click=(self.set_status, "['reviewed']"), size="small",
                        disabled=(f"{k('status_current')} !== 'drafted'",))
                v3.VBtn("Approve", click=(self.set_status, "['approved']"), size="small",
                        disabled=(f"{k('status_current')} !== 'reviewed'",))
                v3.VBtn("Reopen", click=(self.set_status, "['reviewed']"), size="small",
                        disabled=(f"{k('status_current')} !== 'approved'",))
            v3.VProgressLinear(model_value=(k("progress"),), v_show=(k("busy"),), height=6)
            html.Div(f"{{{{ {k('status')} }}}}", classes="text-caption my-1")
            v3.VAlert(text=(k("error"),), v_show=(k("error"),), type="error", density="compact", role="alert")
