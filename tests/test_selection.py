"""Model selection picks the true order / number of states on data from known models."""

import numpy as np
import pytest

from probseq import datasets, selection


def test_ar_order_by_bic_and_heldout():
    train = datasets.ar_process(20, 300, coef=(0.5, -0.4), seed=1)
    valid = datasets.ar_process(20, 300, coef=(0.5, -0.4), seed=2)
    by_bic = selection.select_ar_order(train, orders=range(1, 6))
    assert by_bic.best == 2
    assert by_bic.table.loc[2, "bic"] == by_bic.table["bic"].min()
    held = selection.select_ar_order(train, orders=range(1, 6), criterion="heldout",
                                     validation_data=valid)
    assert held.best in (2, 3)  # held-out likelihood is noisier than BIC by nature
    assert held.table.loc[1, "heldout_log_lik"] < held.table.loc[2, "heldout_log_lik"] - 50


def test_markov_order_by_bic():
    rng = np.random.default_rng(0)
    # A second-order chain over 3 symbols: x_t depends on (x_{t-2}, x_{t-1}).
    table = rng.dirichlet(np.full(3, 0.3), size=(3, 3))
    x = [0, 1]
    for _ in range(20_000):
        x.append(rng.choice(3, p=table[x[-2], x[-1]]))
    sel = selection.select_markov_order(np.array(x), orders=range(1, 5), alpha=0.5)
    assert sel.best == 2


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
