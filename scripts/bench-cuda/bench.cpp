// The embedded engine's llama.cpp settings on a GPU: loads a GGUF with every layer offloaded,
// makes a context the way crates/embedded/src/llama.rs does (one KV stream per sequence, no
// flash attention), and times single-stream prefill and decode and aggregate decode of
// 1..32 sequences stepped together, as scripts/bench-embedded.sh does on the CPU. Prints one
// JSON object per measurement. Token ids are synthetic (speed does not depend on them);
// decode is greedy.
//
// Built by scripts/bench-cuda.sh against the llama.cpp that llama-cpp-sys-2 vendors.
#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

static int argmax(const float * row, int n) {
    return int(std::max_element(row, row + n) - row);
}

static void add(llama_batch & b, llama_token t, llama_pos p, llama_seq_id s, bool logits) {
    b.token[b.n_tokens] = t;
    b.pos[b.n_tokens] = p;
    b.n_seq_id[b.n_tokens] = 1;
    b.seq_id[b.n_tokens][0] = s;
    b.logits[b.n_tokens] = logits;
    b.n_tokens++;
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [gpu_layers=99] [prompt=98] [decode=128] [runs=5] [threads=1]\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int ngl = argc > 2 ? atoi(argv[2]) : 99;
    const int n_prompt = argc > 3 ? atoi(argv[3]) : 98;
    const int n_decode = argc > 4 ? atoi(argv[4]) : 128;
    const int runs = argc > 5 ? atoi(argv[5]) : 5;
    const int threads = argc > 6 ? atoi(argv[6]) : 1;
    const int max_seqs = 32;

    llama_log_set(quiet, nullptr);
    llama_backend_init();
    auto mparams = llama_model_default_params();
    mparams.n_gpu_layers = ngl;
    double t0 = now_s();
    llama_model * model = llama_model_load_from_file(path, mparams);
    if (!model) { fprintf(stderr, "could not load %s\n", path); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    auto cparams = llama_context_default_params();
    const int slot_ctx = 512;
    cparams.n_ctx = slot_ctx * max_seqs;
    cparams.n_batch = 64;
    cparams.n_ubatch = 64;
    cparams.n_seq_max = max_seqs;
    cparams.kv_unified = false;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cparams.n_threads = threads;
    cparams.n_threads_batch = threads;
    cparams.no_perf = true;
    // With no layers offloaded, keep every op on the CPU (llama.cpp would otherwise send
    // large batches' matrix products to the GPU).
    cparams.op_offload = ngl > 0;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) { fprintf(stderr, "could not create a context\n"); return 1; }
    const double load_s = now_s() - t0;
    llama_memory_t mem = llama_get_memory(ctx);
    llama_batch batch = llama_batch_init(64, 0, 1);

    std::vector<llama_token> prompt(n_prompt);
    for (int i = 0; i < n_prompt; i++) prompt[i] = 1 + (i * 7919) % (n_vocab - 1);

    // Prefills `seq` in chunks of 64 (the engine's canonical chunk); returns the first token.
    auto prefill = [&](int seq) -> llama_token {
        llama_memory_seq_rm(mem, seq, 0, -1);
        for (int start = 0; start < n_prompt; start += 64) {
            batch.n_tokens = 0;
            const int end = std::min(n_prompt, start + 64);
            for (int i = start; i < end; i++) add(batch, prompt[i], i, seq, i == n_prompt - 1);
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "prefill failed\n"); exit(1); }
        }
        return argmax(llama_get_logits_ith(ctx, batch.n_tokens - 1), n_vocab);
    };

    std::vector<double> prefill_rates, decode_rates;
    for (int run = 0; run <= runs; run++) {
        double s = now_s();
        llama_token tok = prefill(0);
        llama_synchronize(ctx);
        const double p = now_s() - s;
        s = now_s();
        for (int k = 0; k < n_decode; k++) {
            batch.n_tokens = 0;
            add(batch, tok, n_prompt + k, 0, true);
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
            tok = argmax(llama_get_logits_ith(ctx, 0), n_vocab);
        }
        const double d = now_s() - s;
        if (run > 0) {
            prefill_rates.push_back(n_prompt / p);
            decode_rates.push_back(n_decode / d);
        }
    }
    std::sort(prefill_rates.begin(), prefill_rates.end());
    std::sort(decode_rates.begin(), decode_rates.end());
    printf("{\"engine\":\"llama.cpp (pinned, bench-cuda)\",\"mode\":\"single\",\"gpu_layers\":%d,\"threads\":%d,"
           "\"prompt_tokens\":%d,\"decode_tokens\":%d,\"runs\":%d,\"load_s\":%.3f,"
           "\"prefill_tok_s\":%.1f,\"decode_tok_s\":%.1f}\n",
           ngl, threads, n_prompt, n_decode, runs, load_s,
           prefill_rates[prefill_rates.size() / 2], decode_rates[decode_rates.size() / 2]);
    fflush(stdout);

    for (int n : {1, 4, 8, 16, 32}) {
        std::vector<llama_token> toks(n);
        double s = now_s();
        for (int q = 0; q < n; q++) toks[q] = prefill(q);
        const double p = now_s() - s;
        s = now_s();
        for (int k = 0; k < n_decode; k++) {
            batch.n_tokens = 0;
            for (int q = 0; q < n; q++) add(batch, toks[q], n_prompt + k, q, true);
            if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "batched decode failed\n"); return 1; }
            for (int q = 0; q < n; q++) toks[q] = argmax(llama_get_logits_ith(ctx, q), n_vocab);
        }
        const double d = now_s() - s;
        printf("{\"engine\":\"llama.cpp (pinned, bench-cuda)\",\"mode\":\"aggregate\",\"gpu_layers\":%d,"
               "\"sequences\":%d,\"prefill_s\":%.3f,\"decode_tok_s\":%.1f}\n",
               ngl, n, p, n * n_decode / d);
        fflush(stdout);
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
