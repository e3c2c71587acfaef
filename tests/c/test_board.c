/* The workers' shared board (board.c): a slot holds what its worker pinned last, whole lines
 * only when cut, readable from another process; a cleared slot (a dead worker's) is empty. */
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/board.c" /* the program's, not the library's: built in directly */
#include "ctest.h"

static char buf[NIM_BOARD_SLOT_BYTES + 1];

static void a_pinned_text_is_read_back_and_replaced(void) {
    nim_board *b = nim_board_new(2);
    CHECK(b != NULL);
    CHECK(nim_board_slots(b) == 2);
    CHECK(nim_board_read(b, 0, buf, sizeof buf) == 0);
    nim_board_pin(b, 0, "a 1\nb 2\n", 8);
    CHECK(nim_board_read(b, 0, buf, sizeof buf) == 8);
    CHECK(memcmp(buf, "a 1\nb 2\n", 8) == 0);
    nim_board_pin(b, 0, "c 3\n", 4);
    CHECK(nim_board_read(b, 0, buf, sizeof buf) == 4);
    CHECK(nim_board_read(b, 1, buf, sizeof buf) == 0);
    nim_board_clear(b, 0);
    CHECK(nim_board_read(b, 0, buf, sizeof buf) == 0);
    nim_board_pin(b, 5, "x\n", 2); /* out of range: ignored */
    CHECK(nim_board_read(b, 5, buf, sizeof buf) == 0);
    nim_board_free(b);
}

static void a_text_too_large_keeps_whole_lines(void) {
    nim_board *b = nim_board_new(1);
    static char big[NIM_BOARD_SLOT_BYTES + 100];
    memset(big, 'x', sizeof big);
    for (size_t i = 99; i < sizeof big; i += 100)
        big[i] = '\n';
    nim_board_pin(b, 0, big, sizeof big);
    size_t n = nim_board_read(b, 0, buf, sizeof buf);
    CHECK(n > 0 && n <= NIM_BOARD_SLOT_BYTES);
    CHECK(n % 100 == 0 && buf[n - 1] == '\n');
    nim_board_free(b);
}

static void another_process_sees_what_a_worker_pins(void) {
    nim_board *b = nim_board_new(2);
    pid_t pid = fork();
    if (pid == 0) {
        nim_board_pin(b, 1, "from child\n", 11);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(nim_board_read(b, 1, buf, sizeof buf) == 11);
    CHECK(memcmp(buf, "from child\n", 11) == 0);
    nim_board_free(b);
}

int main(void) {
    RUN(a_pinned_text_is_read_back_and_replaced);
    RUN(a_text_too_large_keeps_whole_lines);
    RUN(another_process_sees_what_a_worker_pins);
    return CTEST_SUMMARY("board");
}
