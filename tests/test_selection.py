"""Model selection picks the true order / number of states on data from known models."""

import numpy as np
import pytest

from probseq import datasets, selection


def test_ar_order_by_bic_and_heldout():
    train = datasets.ar_process(20, 300, coef=(0.5, -0.4), seed=1)
    valid = datasets.ar_process(20, 300, coef=(0.5, -0.4), seed=2)
    by_bic = selection.select_ar_order(train, orders=range(1, 6))
    assert by_bic.best == 2 and by_bic.criterion == "bic"
    assert by_bic.table.loc[2, "bic"] == by_bic.table["bic"].min()
    held = selection.select_ar_order(train, orders=range(1, 6), criterion="heldout",
                                     validation_data=valid)
    assert held.criterion == "heldout" and "validation_data" in held.description
    assert held.best in (2, 3)  # held-out likelihood is noisier than BIC by nature
    assert held.table.loc[1, "heldout_log_lik"] < held.table.loc[2, "heldout_log_lik"] - 50


def test_markov_order_by_bic():
    rng = np.random.default_rng(0)
    # A second-order chain over 3 symbols: x_t depends on (x_{t-2}, x_{t-1}).
    table = rng.dirichlet(np.full(3, 0.3), size=(3, 3))
    x = [0, 1]
    for _ in range(20_000):
        x.append(rng.choice(3, p=table[x[-2], x[-1]]))
    sel = selection.select_markov_order(np.array(x), orders=range(1, 5), alpha=0.5,
                                        criterion="bic")
    assert sel.best == 2 and sel.criterion == "bic"
    assert sel.table.attrs["criterion"] == "bic"


def _chain_in_a_large_alphabet(order, num_sequences, length, seed, used=(3, 17, 25, 39)):
    """A random order-k chain over 4 symbols, written as symbols of an alphabet of V = 40."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(4, 0.5), size=(4,) * order)
    out = []
    for _ in range(num_sequences):
        x = list(rng.integers(0, 4, size=order))
        while len(x) < length:
            x.append(rng.choice(4, p=table[tuple(x[-order:])]))
        out.append(np.array(used)[np.array(x)])
    return out


@pytest.mark.parametrize("order", [1, 2])
def test_markov_order_defaults_to_held_out_likelihood_and_recovers_the_order(order):
    # Many sequences: K-fold cross-validation over sequences.
    seqs = _chain_in_a_large_alphabet(order, 20, 200, seed=order)
    sel = selection.select_markov_order(seqs, num_symbols=40)
    assert sel.criterion == "crossval" and sel.table.attrs["criterion"] == "crossval"
    assert "5-fold" in sel.description
    assert sel.best == order, sel.table
    assert sel.model.order == order and sel.model.num_symbols == 40
    assert sel.model.smoothing == "modified-kneser-ney"
    # The paired standard errors: the chosen candidate is 0, lower orders lose by many SEs.
    assert sel.table.loc[order, "heldout_delta"] == 0
    assert (sel.table.loc[: order - 1, "heldout_delta"]
            < -3 * sel.table.loc[: order - 1, "heldout_delta_se"]).all()
    # One sequence: a held-out tail scored one step ahead.
    one = _chain_in_a_large_alphabet(order, 1, 3000, seed=10 + order)[0]
    sel = selection.select_markov_order(one)  # V inferred from the whole sequence
    assert sel.criterion == "crossval" and "tail" in sel.description
    assert sel.best == order, sel.table


def test_held_out_tail_and_folds_by_hand():
    from probseq import MarkovChain

    x = _chain_in_a_large_alphabet(1, 1, 100, seed=0)[0]
    sel = selection.select_markov_order(x, orders=[0, 1], tail=0.25)
    m = MarkovChain(order=1, num_symbols=40).fit(x[:75])
    expected = float(m.log_prob_steps(x)[75:].sum())
    assert sel.table.loc[1, "heldout_log_lik"] == pytest.approx(expected, rel=1e-12)
    assert sel.table.loc[1, "heldout_nats_per_step"] == pytest.approx(-expected / 25)
    seqs = _chain_in_a_large_alphabet(1, 4, 30, seed=1)
    sel = selection.select_markov_order(seqs, orders=[1], num_folds=4)  # leave one out
    total = sum(float(MarkovChain(order=1, num_symbols=40)
                      .fit([s for j, s in enumerate(seqs) if j != i]).log_prob(seqs[i]))
                for i in range(4))
    assert sel.table.loc[1, "heldout_log_lik"] == pytest.approx(total, rel=1e-12)


def test_hmm_states_by_bic():
    seqs, _ = datasets.gaussian_hmm(
        20, 150, initial=(0.4, 0.3, 0.3),
        transition=((0.9, 0.05, 0.05), (0.05, 0.9, 0.05), (0.05, 0.05, 0.9)),
        means=(-3.0, 0.0, 3.0), stds=(0.5, 0.5, 0.5), seed=3)
    sel = selection.select_hmm_states(seqs, num_states=range(1, 5), emission="gaussian",
                                      fit_options={"seed": 0, "max_epochs": 30, "num_restarts": 2})
    assert sel.best == 3


def test_selection_refuses_bad_arguments():
    x = datasets.ar_process(2, 50, seed=0)
    with pytest.raises(ValueError, match="validation_data"):
        selection.select_ar_order(x, criterion="heldout")
    with pytest.raises(ValueError, match="criterion"):
        selection.select_ar_order(x, criterion="aicc")
    with pytest.raises(ValueError, match="no candidates"):
        selection.select_ar_order(x, orders=[])
    with pytest.raises(ValueError, match="crossval"):
        selection.select_ar_order(x, criterion="crossval", validation_data=x)
    with pytest.raises(ValueError, match="too short"):
        selection.select_markov_order([0, 1, 0], criterion="crossval", tail=0.1)
    with pytest.raises(ValueError, match="num_folds"):
        selection.select_markov_order([[0, 1], [1, 0]], num_folds=1)
