/* The answer reader (answer.c): what it accepts, what it refuses and why, and that its
 * memory comes only from the caller. */
#include <stdlib.h>

#include "../../src/answer.h"
#include "../../src/scratch.h"
#include "ctest.h"

typedef struct {
    void *blocks[16];
    int n;
} arena;

static void *arena_alloc(void *ud, size_t size) {
    arena *a = ud;
    if (a->n == 16) return NULL;
    return a->blocks[a->n++] = malloc(size);
}

static void arena_free(arena *a) {
    for (int i = 0; i < a->n; i++)
        free(a->blocks[i]);
    a->n = 0;
}

static nim_scratch tmp; /* reused across reads, as the binding reuses its state's */

static int read_shaped(const char *body, size_t np, const nim_answer_shape *shape, nim_answer *out,
                       char *err) {
    arena a = {{0}, 0};
    err[0] = '\0';
    nim_answer_mem mem = {arena_alloc, &a, nim_scratch_alloc, &tmp};
    int rc = nim_answer_read(body, strlen(body), np, shape, &mem, out, err, 256);
    nim_scratch_reset(&tmp);
    if (rc == 0 && out->n > 0) { /* keep the rankings past the arena */
        static nim_ranking keep[16];
        memcpy(keep, out->rk, out->n * sizeof *keep);
        out->rk = keep;
    }
    arena_free(&a);
    return rc;
}

static int read_answer(const char *body, size_t np, nim_answer *out, char *err) {
    return read_shaped(body, np, NULL, out, err);
}

/* Other providers' shapes: Cohere's (results, relevance_score, meta.billed_units.search_units),
 * TEI's bare list of {index, score}; the same strictness, messages in their own names. */
static void other_shapes(void) {
    const nim_answer_shape cohere = {
        "results", "index", "relevance_score", {"meta", "billed_units", "search_units"}, "id"};
    const nim_answer_shape tei = {NULL, "index", "score", {NULL}, NULL};
    nim_answer a;
    char err[256];
    CHECK(read_shaped("{\"id\":\"x1\",\"results\":[{\"index\":1,\"relevance_score\":0.9},"
                      "{\"index\":0,\"relevance_score\":0.1}],\"meta\":{\"api_version\":"
                      "{\"version\":\"2\"},\"billed_units\":{\"search_units\":1}}}",
                      2, &cohere, &a, err) == 0);
    CHECK(a.n == 2 && a.rk[0].index == 1 && a.rk[0].score == 0.9 && a.tokens == 1);
    CHECK(a.id_len == 2);
    CHECK(read_shaped("{\"rankings\":[]}", 2, &cohere, &a, err) == -1);
    CHECK(strstr(err, "no 'results' list") != NULL);
    CHECK(read_shaped("{\"results\":[{\"index\":5,\"relevance_score\":1}]}", 2, &cohere, &a, err) ==
          -1);
    CHECK(strstr(err, "results[0].index is out of range") != NULL);
    CHECK(read_shaped("[{\"index\":0,\"score\":0.5},{\"score\":0.7,\"index\":1}]", 2, &tei, &a,
                      err) == 0);
    CHECK(a.n == 2 && a.rk[1].index == 1 && a.rk[1].score == 0.7 && a.tokens == 0 && !a.id);
    CHECK(read_shaped("[]", 0, &tei, &a, err) == 0 && a.n == 0);
    CHECK(read_shaped("{\"results\":[]}", 2, &tei, &a, err) == -1);
    CHECK(strstr(err, "not a JSON list") != NULL);
    CHECK(read_shaped("[{\"index\":0,\"score\":0.5},{\"index\":0,\"score\":1}]", 2, &tei, &a,
                      err) == -1);
    CHECK(strstr(err, "answer[1].index repeats") != NULL);
    CHECK(read_shaped("[{\"index\":0,\"score\":\"1\"}]", 2, &tei, &a, err) == -1);
    CHECK(strstr(err, "answer[0].score is not a finite number") != NULL);
    CHECK(read_shaped("[{\"index\":0,\"score\":1}] x", 2, &tei, &a, err) == -1);
    CHECK(read_shaped("[{\"index\":0,\"index\":1,\"score\":0.5}]", 2, &tei, &a, err) == -1);
    CHECK(strstr(err, "answer[0] has 'index' twice") != NULL);
}

static void well_formed_answers(void) {
    nim_answer a;
    char err[256];
    CHECK(read_answer("{\"rankings\":[{\"index\":2,\"logit\":6.828125},{\"logit\":-1.5e0,"
                      "\"index\":0,\"extra\":[1,{\"x\":null}]}],\"usage\":{\"prompt_tokens\":5,"
                      "\"total_tokens\":123},\"id\":\"abc\"}",
                      3, &a, err) == 0);
    CHECK(a.n == 2 && a.rk[0].index == 2 && a.rk[0].score == 6.828125);
    CHECK(a.rk[1].index == 0 && a.rk[1].score == -1.5);
    CHECK(a.tokens == 123);
    CHECK(a.id && a.id_len == 3 && memcmp(a.id, "abc", 3) == 0 && !a.id_escaped);
    CHECK(read_answer(" {\"rankings\": [ ] } \n", 0, &a, err) == 0 && a.n == 0);
    CHECK(read_answer("{\"id\":\"\\ud83d\\ude00\\u00e9\",\"rankings\":[]}", 1, &a, err) == 0);
    CHECK(read_answer("{\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"rankings\":[]}", 1, &a,
                      err) == 0);
    CHECK(read_answer("{\"x\":[true,false,null,-0.5E-3,{},[],\"\\t\"],\"rankings\":[ {\"index\""
                      " : 0 , \"logit\" : 1 } ]}",
                      1, &a, err) == 0 &&
          a.n == 1);
    CHECK(read_answer("{\"id\":\"x\\\"y\",\"rankings\":[]}", 1, &a, err) == 0 && a.id_escaped);
    CHECK(read_answer("{\"usage\":{\"total_tokens\":-4},\"rankings\":[]}", 1, &a, err) == 0 &&
          a.tokens == 0);
}

static void refused_answers_say_why(void) {
    static const struct {
        const char *body, *why;
    } cases[] = {
        {"", "not JSON"},
        {"[]", "not a JSON object"},
        {"{}", "no 'rankings'"},
        {"{\"rankings\":{}}", "not a list"},
        {"{\"rankings\":[1]}", "rankings[0] is not an object"},
        {"{\"rankings\":[{\"index\":\"1\",\"logit\":1}]}", "index is not an integer"},
        {"{\"rankings\":[{\"index\":0x1,\"logit\":1}]}", "not JSON"},
        {"{\"rankings\":[{\"index\":1e0,\"logit\":1}]}", "index is not an integer"},
        {"{\"rankings\":[{\"index\":-0,\"logit\":1},{\"index\":0,\"logit\":1}]}", "repeats"},
        {"{\"rankings\":[{\"index\":3,\"logit\":1}]}", "out of range"},
        {"{\"rankings\":[{\"index\":0,\"logit\":1.}]}", "not JSON"},
        {"{\"rankings\":[{\"index\":0,\"logit\":.5}]}", "not JSON"},
        {"{\"rankings\":[{\"index\":0,\"logit\":true}]}", "logit is not a finite number"},
        {"{\"rankings\":[{\"index\":0,\"logit\":1e400}]}", "logit is not a finite number"},
        {"{\"rankings\":[{\"index\":0}]}", "logit is missing"},
        {"{\"rankings\":[{\"logit\":0}]}", "index is missing"},
        {"{\"rankings\":[{\"index\":0,\"logit\":1},{\"index\":1,\"logit\":1},"
         "{\"index\":2,\"logit\":1},{\"index\":0,\"logit\":1}]}",
         "more entries than passages"},
        {"{\"rankings\":[]} {}", "JSON"},
        {"{\"rankings\":[}", "not JSON"},
        {"{\"rankings\"}", "not JSON"},
        {"{\"rankings\":[{\"index\":0,\"logit\":1}", "not JSON"},
        /* what a tokenizer alone lets through */
        {"{\"rankings\":[{\"index\":0,\"logit\":1}{\"index\":1,\"logit\":2}]}", "not JSON"},
        {"{\"rankings\":[{\"index\":0,\"logit\":1},,{\"index\":1,\"logit\":2}]}", "not JSON"},
        {"{,\"rankings\":[]}", "not JSON"},
        {"{\"rankings\":[],}", "not JSON"},
        {"{\"rankings\":[,]}", "not JSON"},
        {"{\"rankings\":[] \"id\":\"a\"}", "not JSON"},
        {"{\"rankings\":[],\"x\":nonsense}", "not JSON"},
        {"{\"rankings\":[],\"x\":tru}", "not JSON"},
        {"{\"rankings\":[],\"x\":nulls}", "not JSON"},
        {"{\"rankings\":[],\"x\":[1 2]}", "not JSON"},
        {"{\"rankings\":[],\"x\":{\"a\":1 \"b\":2}}", "not JSON"},
        {"{\"rankings\":[],\"x\":[1:2]}", "not JSON"},
        {"{\"rankings\":[],\"x\":\"a\tb\"}", "not JSON"},
        {"{\"rankings\":[],\"x\":-}", "not JSON"},
        {"{\"rankings\":[],\"x\":1e}", "not JSON"},
        {"{\"rankings\":[],\"x\":01}", "not JSON"},
        {"\"a\":1", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\\ude1e\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\xff\xfe\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\xc3\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\xc0\xaf\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\xed\xa0\x80\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\\ud83d\"}", "not JSON"},
        {"{\"rankings\":[],\"id\":\"\\ud83dx\\ude00\"}", "not JSON"},
        {":{\"rankings\":[]}", "not JSON"},
        {", {\"rankings\":[]}", "not JSON"},
        {"{\"rankings\":[],\"x\":[\"a\":1]}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nim_answer a;
        char err[256];
        int rc = read_answer(cases[i].body, 3, &a, err);
        CHECK(rc == -1 && strstr(err, cases[i].why));
        if (rc != -1 || !strstr(err, cases[i].why))
            fprintf(stderr, "  body %s: got '%s', want '%s'\n", cases[i].body, err, cases[i].why);
    }
}

/* Counts what the reader asks for: memory follows the passages sent, never the body. */
static size_t asked;
static void *counting_alloc(void *ud, size_t size) {
    asked += size;
    return arena_alloc(ud, size);
}

/* Reads body with every block counted in `asked` (from 0); the caller frees the arena. */
static int read_counted(const char *body, size_t np, arena *a, nim_answer *out, char *err) {
    asked = 0;
    nim_answer_mem mem = {counting_alloc, a, counting_alloc, a};
    return nim_answer_read(body, strlen(body), np, NULL, &mem, out, err, 256);
}

static void a_flood_of_values_takes_no_memory_per_value(void) {
    size_t n = 200000;
    char *body = malloc(n * 2 + 64);
    strcpy(body, "{\"x\":[");
    size_t k = strlen(body);
    for (size_t i = 0; i < n; i++) {
        body[k++] = '1';
        body[k++] = ',';
    }
    strcpy(body + k, "1],\"rankings\":[{\"index\":2,\"logit\":0.5}]}");
    arena a = {{0}, 0};
    nim_answer out;
    char err[256];
    CHECK(read_counted(body, 3, &a, &out, err) == 0);
    CHECK(out.n == 1 && out.rk[0].index == 2 && out.rk[0].score == 0.5);
    CHECK(asked <= 3 * sizeof(nim_ranking) + 3);
    arena_free(&a);
    free(body);
}

static void deep_nesting_is_refused_without_recursion(void) {
    size_t depth = 100000;
    char *body = malloc(depth * 2 + 64);
    size_t k = (size_t)sprintf(body, "{\"rankings\":[],\"x\":");
    memset(body + k, '[', depth);
    memset(body + k + depth, ']', depth);
    strcpy(body + k + 2 * depth, "}");
    nim_answer a;
    char err[256];
    CHECK(read_answer(body, 3, &a, err) == -1 && strstr(err, "levels deep"));
    body[k + 511] = '1'; /* 511 levels inside the member: within the limit */
    memmove(body + k + 512, body + k + 2 * depth - 511, 511);
    strcpy(body + k + 1023, "}");
    CHECK(read_answer(body, 3, &a, err) == 0);
    free(body);
}

static void errors_rank_syntax_then_list_then_entry(void) {
    nim_answer a;
    char err[256];
    /* an entry's problem, then a syntax error later on: the body is not JSON */
    CHECK(read_answer("{\"rankings\":[{\"index\":9,\"logit\":1}],\"x\":tru}", 3, &a, err) == -1 &&
          strstr(err, "not JSON"));
    /* the list's problem outranks an entry's found before it */
    CHECK(read_answer("{\"rankings\":[{\"index\":9,\"logit\":1},{\"index\":0,\"logit\":1},"
                      "{\"index\":1,\"logit\":1},{\"index\":2,\"logit\":1}]}",
                      3, &a, err) == -1 &&
          strstr(err, "more entries"));
    /* the first entry's problem is the one told */
    CHECK(read_answer("{\"rankings\":[{\"index\":9,\"logit\":1},{\"logit\":1}]}", 3, &a, err) ==
              -1 &&
          strstr(err, "rankings[0].index is out of range"));
    CHECK(read_answer("{\"rankings\":[],\"rankings\":[]}", 3, &a, err) == -1 &&
          strstr(err, "appears twice"));
}

static void memory_follows_the_answer_not_its_repeats(void) {
    /* the list key 20,000 times: one list is read, the rest only checked */
    size_t n = 20000;
    char *body = malloc(n * 14 + 64);
    size_t k = (size_t)sprintf(body, "{");
    for (size_t i = 0; i < n; i++)
        k += (size_t)sprintf(body + k, "%s\"rankings\":[]", i ? "," : "");
    strcpy(body + k, "}");
    arena a = {{0}, 0};
    nim_answer out;
    char err[256];
    CHECK(read_counted(body, 1000, &a, &out, err) == -1);
    CHECK(strstr(err, "appears twice") != NULL && out.n == 0);
    CHECK(asked <= 1000 * sizeof(nim_ranking) + 1000);
    arena_free(&a);
    /* a short answer to a long request (top_n) keeps room for what it can hold */
    const char *top = "{\"rankings\":[{\"index\":7,\"logit\":2},{\"index\":3,\"logit\":1}]}";
    CHECK(read_counted(top, 100000, &a, &out, err) == 0);
    CHECK(out.n == 2 && out.rk[0].index == 7 && out.rk[1].index == 3);
    CHECK(asked <= 100000 + 4 * sizeof(nim_ranking));
    arena_free(&a);
    free(body);
}

static void a_refused_answer_has_no_rankings(void) {
    nim_answer a;
    char err[256];
    CHECK(read_answer("{\"rankings\":[{\"index\":0},{\"index\":1,\"logit\":2}]}", 3, &a, err) ==
              -1 &&
          a.n == 0);
    CHECK(read_answer("{\"rankings\":[{\"index\":0,\"logit\":1}],\"x\":tru}", 3, &a, err) == -1 &&
          a.n == 0);
    /* valid JSON, but a number nimrank does not read: said so */
    CHECK(read_answer("{\"rankings\":[{\"index\":0,\"logit\":0.5000000000000000000000000000000000"
                      "00000000000000000000000000001}]}",
                      3, &a, err) == -1 &&
          strstr(err, "64 characters or more"));
}

int main(void) {
    RUN(well_formed_answers);
    RUN(other_shapes);
    RUN(refused_answers_say_why);
    RUN(a_flood_of_values_takes_no_memory_per_value);
    RUN(deep_nesting_is_refused_without_recursion);
    RUN(errors_rank_syntax_then_list_then_entry);
    RUN(memory_follows_the_answer_not_its_repeats);
    RUN(a_refused_answer_has_no_rankings);
    nim_scratch_free(&tmp);
    return CTEST_SUMMARY("c/answer");
}
