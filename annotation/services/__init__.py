"""Write-side operations of the annotation app, one module per sub-domain.

- ``rounds``: creating rounds and their items, gold items, round settings
- ``answers``: checking an answer against its item (through the item's kind)
- ``assignment``: leasing an annotator's next item, reclaiming expired leases
- ``submission``: storing a judgment, undoing it
- ``aggregation``: recomputing an item's or a round's majority results

The hand-written SQL of the hot path is in ``annotation.sql``, the per-kind rules in
``annotation.kinds``, reads in ``annotation.selectors``; prompts and images are the catalog's.
"""
