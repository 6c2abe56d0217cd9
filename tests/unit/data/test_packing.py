"""Packing invariants: per-sample shift, restarting positions, cu_seqlens, and packed == unpacked content."""

from collections import Counter

import numpy as np
import pytest

from sft_bridge_port.data.chat_tokenize import EncodedSample
from sft_bridge_port.data.collate import collate_packed, collate_unpacked
from sft_bridge_port.data.packing import pack_bins, pack_samples, slot_length

PAD = 0


def make_samples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(1, 50, size=n)
        mask = (rng.random(n) < 0.6).astype(np.uint8)
        out.append(EncodedSample(ids.astype(np.int64), mask))
    return out


def test_first_fit_decreasing_example():
    assert pack_bins([5, 4, 3, 2], 8) == [[0, 2], [1, 3]]
    bins = pack_bins([5, 4, 3, 2], 8, "first_fit_shuffle", seed=3)
    assert sorted(i for b in bins for i in b) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="packed_sequence_size"):
        pack_bins([9], 8)
    assert slot_length(6, 4) == 8 and slot_length(6, 1) == 5


def triples(batch):
    """Multiset of (token, label, mask) over real positions (mask of padding is 0 and excluded via token_count)."""
    out = Counter()
    for r in range(batch["tokens"].shape[0]):
        t, l, m = batch["tokens"][r], batch["labels"][r], batch["loss_mask"][r]
        for j in range(t.shape[0]):
            if m[j] or t[j] != PAD:
                out[(int(t[j]), int(l[j]), float(m[j]))] += 1
    return out


@pytest.mark.parametrize("mult", [1, 4])
def test_packed_batch_invariants(mult):
    lengths = [7, 12, 3, 9, 20, 5, 2, 16]
    samples = make_samples(lengths)
    packs, meta = pack_samples(samples, 32, pad_seq_to_mult=mult)
    assert sum(len(p["seq_start_id"]) for p in packs) == len(samples)
    assert meta["packing_efficiency"] == pytest.approx(sum(n - 1 for n in lengths) / (len(packs) * 32))
    for pack in packs:
        batch = collate_packed([pack], PAD, 32, pad_to_max_length=True, pad_mult=mult)
        assert batch["tokens"].shape == (1, 32) and batch["cu_seqlens"].dtype.is_floating_point is False
        cu = batch["cu_seqlens"][0].tolist()
        argmin = int(batch["cu_seqlens_argmin"][0, 0])
        assert cu[argmin] == -1 and all(c >= 0 for c in cu[:argmin]) and cu[argmin - 1] == 32
        starts = list(pack["seq_start_id"]) + [len(pack["input_ids"])]
        real = [b - a - 1 for a, b in zip(starts[:-1], starts[1:])]
        padded = [-(-n // mult) * mult for n in real]
        assert np.diff(cu[:len(real) + 1]).tolist() == padded  # cu_seqlens match the sample lengths
        if mult > 1:
            cu_un = batch["cu_seqlens_unpadded"][0].tolist()
            assert np.diff(cu_un[:len(real) + 1]).tolist() == real
        assert int(batch["max_seqlen"][0, 0]) == max(np.diff(cu[:argmin]))
        pos, lab, tok, m = (batch[k][0] for k in ("position_ids", "labels", "tokens", "loss_mask"))
        for k, (a, n) in enumerate(zip(cu[:len(real)], real)):
            assert pos[a:a + padded[k]].tolist() == list(range(padded[k]))  # positions restart per sample
            ids = pack["input_ids"][starts[k]:starts[k + 1]]
            assert tok[a:a + n].tolist() == ids[:-1].tolist()
            assert lab[a:a + n].tolist() == ids[1:].tolist()  # no label crosses into the next sample
            assert m[a + n:a + padded[k]].sum() == 0
        assert m[cu[len(real)]:].sum() == 0


def test_packed_and_unpacked_give_same_triples():
    samples = make_samples([7, 12, 3, 9, 20, 5, 2, 16], seed=1)
    packs, _ = pack_samples(samples, 32)
    packed = collate_packed(packs, PAD, 32, pad_to_max_length=False)
    unpacked = collate_unpacked(samples, PAD, seq_length=32, pad_mult=8)
    assert unpacked["tokens"].shape[1] == 24  # batch max 19, rounded to the multiple 8
    assert triples(packed) == triples(unpacked)
    assert sum(packed["token_count"]) == sum(unpacked["token_count"]) == sum(len(s.input_ids) - 1 for s in samples)
    full = collate_unpacked(samples[:2], PAD, seq_length=32, pad_to_max_length=True)
    assert full["tokens"].shape == (2, 32) and full["loss_mask"][:, 19:].sum() == 0


def test_eos_inside_content_stays_trained():
    """Masks come from spans: an EOS id in the content is not mistaken for a separator (Bridge masks tokens==eos)."""
    eos = 7
    s = EncodedSample(np.array([1, eos, 3, eos]), np.array([0, 1, 1, 1], dtype=np.uint8))
    packs, _ = pack_samples([s, s], 8)
    batch = collate_packed(packs, eos, 8)
    assert batch["loss_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]


def test_pad_cu_seqlens_fixed_width():
    samples = make_samples([4, 4, 4])
    packs, meta = pack_samples(samples, 16)
    batch = collate_packed(packs, PAD, 16, cu_seqlens_width=meta["max_samples_per_bin"] + 3)
    assert batch["cu_seqlens"].shape == (1, 6)
    with pytest.raises(ValueError, match="pad_cu_seqlens"):
        collate_packed(packs, PAD, 16, cu_seqlens_width=3)
