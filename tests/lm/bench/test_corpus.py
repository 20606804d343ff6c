from aihf.lm.bench import corpus


def test_clean_cookie_drops_attributions_overstrike_and_art():
    chunk = "A b\x08bore is a man who talks\nabout himself.\n\t\t-- Ambrose Bierce"
    assert corpus.clean_cookie(chunk) == "A bore is a man who talks about himself."
    assert corpus.clean_cookie("  /\\_/\\ \n ( o.o ) \n  > ^ <  ####") is None
    assert corpus.clean_cookie("short") is None


def test_read_cookies_skips_non_prose_files(tmp_path):
    (tmp_path / "wisdom").write_text("Fortune favours the brave and the well prepared.\n%\nx\n%\n")
    (tmp_path / "wisdom.dat").write_bytes(b"\x00\x01")
    (tmp_path / "perl").write_text("print 'this is code, not prose at all';\n%\n")
    assert corpus.read_cookies(tmp_path) == ["Fortune favours the brave and the well prepared."]


def test_splits_are_disjoint_and_prompts_come_from_held_out_cookies():
    cookies = [
        f"Cookie number {i} says that life is good. Another sentence {i} follows here slowly."
        for i in range(400)
    ]
    splits = corpus.build_corpus(cookies, seed=0)
    held_out = set(cookies) - set(splits["pretrain"])
    assert held_out and splits["pretrain"]
    names = list(corpus.PROMPT_SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(splits[a]) & set(splits[b])
    sizes = [len(splits[n]) for n in names]
    assert abs(sizes[1] / sum(sizes) - 0.4) < 0.02
    for prompt in splits["test"] + splits["datagen"] + splits["rl"]:
        assert any(s.startswith(prompt) for c in held_out for s in corpus.split_sentences(c))
        assert 3 <= len(prompt.split()) <= 5


def test_shipped_corpus_is_consistent():
    pretrain = set(corpus.load_pretrain_text())
    prompts = {n: corpus.load_prompts(n) for n in corpus.PROMPT_SPLITS}
    assert len(pretrain) > 5000 and all(len(p) > 500 for p in prompts.values())
    assert not set(prompts["test"]) & (set(prompts["rl"]) | set(prompts["datagen"]))
    assert corpus.load_prompts("test", limit=5) == prompts["test"][:5]
