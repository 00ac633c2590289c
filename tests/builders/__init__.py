"""Builders and helpers shared by the tests (and used by benchmarks/): tiny real models,
bundles, graphs, an SSH server, the CLI runner, the support-matrix plugin.

Test modules import these, never each other; benchmarks may import them; nothing here imports
a test module or a benchmark.

    bundles        build_bundle: a tiny bundle (onnx.helper graph, WordPiece tokenizer.json)
    models         bbc_vocabulary, save_tiny_bert: tiny BERT folders on BBC News words
    causal_lm      save_tiny_lm, bbc_bpe: tiny LLaMA / GPT-2 folders, a byte-level BPE
    embedder       save_embedder, save_wordpiece_tokenizer: bare embedding graphs
    export         a torch BERT wrapped for the exporter, Texts (tokenized BBC text)
    minilm         fp32_minilm_bundle: the real MiniLM as an fp32 bundle
    ssh            LoopbackServer: a real SSH server on 127.0.0.1
    cli            run_cli: the real CLI entry point in-process
    bad_files      real bad input files (remote code, JSON edits)
    isolation      an app that runs the runtime with torch & co. blocked
    recipes        QUICK: a fast recipe
    paths          ROOT of the repository
    support_matrix the pytest plugin and renderer of docs/support-matrix.md
"""
