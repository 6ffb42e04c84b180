"""Write-side operations of the annotation app, one module per sub-domain.

- ``prompts``: importing prompt files, storing generated images
- ``rounds``: creating rounds and their items, gold items, round settings
- ``answers``: checking an answer against its item (through the item's kind)
- ``assignment``: leasing an annotator's next item, reclaiming expired leases
- ``submission``: storing a judgment, undoing it
- ``aggregation``: recomputing an item's or a round's majority results

The hand-written SQL of the hot path is in ``annotation.sql``; reads in ``annotation.selectors``.
"""
