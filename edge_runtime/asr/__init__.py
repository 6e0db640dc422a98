"""Spoken commands on the board: a grammar the user writes (:mod:`.grammar`), the model's pronunciations
(:mod:`.lexicon`), their prefix tree (:mod:`.prefix_tree`) and the grammar-constrained CTC decoder
(:mod:`.decoder`). numpy only."""
