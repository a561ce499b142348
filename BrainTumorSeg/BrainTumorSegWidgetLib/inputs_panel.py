"""The Inputs section: a selector per sequence (T1 and T2 may stay empty) and Assign from names."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import slicer

from BrainTumorSegModuleLib.roles import OPTIONAL_ROLES, ROLES

from .panel import Panel, guarded


class InputsPanel(Panel):
    """The sequence selectors (the .ui lets T1 and T2 stay empty: "None"); ``on_change`` runs
    whenever a chosen volume changes."""

    def __init__(self, widget, on_change) -> None:
        super().__init__(widget)
        self.selectors = {"t1": self.ui.t1Selector, "t1ce": self.ui.t1ceSelector,
                          "t2": self.ui.t2Selector, "flair": self.ui.flairSelector}
        for sel in self.selectors.values():
            sel.setMRMLScene(slicer.mrmlScene)
            sel.connect("currentNodeChanged(vtkMRMLNode*)", on_change)
        self.ui.autoAssignButton.connect("clicked()", self.onAutoAssign)

    def volumes(self) -> Dict[str, Optional[object]]:
        """The chosen volume of each sequence, None where none is chosen."""
        return {r: self.selectors[r].currentNode() for r in ROLES}

    def chosenIds(self) -> Dict[str, Optional[str]]:
        return {r: (n.GetID() if n is not None else None) for r, n in self.volumes().items()}

    @guarded
    def onAutoAssign(self) -> None:
        """Fill the selectors from the volume names; the notes say what is left to choose."""
        chosen, notes = self.logic.inputs.assign_volumes()
        for role, node in chosen.items():
            if node is not None:
                self.selectors[role].setCurrentNode(node)
        self.ui.statusLabel.text = "; ".join(notes)

    def restore(self, volumes: Mapping[str, Optional[object]]) -> None:
        """The volumes saved with the scene; an optional sequence saved empty is emptied."""
        for r, node in volumes.items():
            if node is not None or r in OPTIONAL_ROLES:
                self.selectors[r].setCurrentNode(node)

    def setEnabled(self, enabled: bool) -> None:
        for w in list(self.selectors.values()) + [self.ui.autoAssignButton]:
            w.enabled = enabled
