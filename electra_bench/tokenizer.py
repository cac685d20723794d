"""WordPiece tokenizers: ELECTRA's uncased vocab (the default) or a vocab trained on the corpus.

Trap (stack-notes): in transformers 5 `ElectraTokenizerFast(vocab_file=...)` silently ignores the file and maps
everything to [UNK]; the working spelling is `vocab=`. We save with `save_pretrained` next to every checkpoint
so `AutoTokenizer.from_pretrained(checkpoint)` works.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from transformers import ElectraTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def load_tokenizer(vocab_file: str | Path, lowercase: bool = True) -> ElectraTokenizerFast:
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    tok = ElectraTokenizerFast(vocab=str(vocab_file), do_lower_case=lowercase)
    if tok.vocab_size < len(SPECIAL_TOKENS) or tok.mask_token_id is None or tok.unk_token_id == tok.mask_token_id:
        raise ValueError(f"{vocab_file}: not a WordPiece vocab with [PAD]/[UNK]/[CLS]/[SEP]/[MASK]")
    return tok


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def train_wordpiece(texts: Iterable[str], vocab_size: int, out_dir: str | Path, lowercase: bool = True) -> Path:
    """Train a WordPiece vocab with `tokenizers` (BERT normaliser and pre-tokeniser); returns vocab.txt.

    A smaller vocab moves most of a tiny model's parameters out of the embedding table (30,522 x 128 = 3.9M of
    4.7M in the feasibility run) and makes the generator's softmax cheaper.
    """
    from tokenizers import BertWordPieceTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                show_progress=False)
    trainer.save_model(str(out_dir))
    return out_dir / "vocab.txt"
