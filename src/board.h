/* board.h: a notice board in shared memory, one slot per worker of `nimrank serve`. Each
 * worker pins a text there (its metrics in Prometheus text format) and reads the others', so
 * a scrape that reaches any one worker reports the whole server. Created by the supervisor
 * before it forks, so every worker maps the same pages. Plain C; no Lua. */
#ifndef NIM_BOARD_H
#define NIM_BOARD_H

#include <stddef.h>

typedef struct nim_board nim_board;

#define NIM_BOARD_SLOT_BYTES (256u * 1024u)

nim_board *nim_board_new(int slots); /* NULL when the memory cannot be mapped */
void nim_board_free(nim_board *b);
int nim_board_slots(const nim_board *b);
/* Replaces slot's text (cut to the slot's size at the last whole line). */
void nim_board_pin(nim_board *b, int slot, const char *text, size_t len);
/* Copies slot's text into buf (a consistent copy, never half of two texts); returns its
 * length, 0 when the slot holds nothing. */
size_t nim_board_read(nim_board *b, int slot, char *buf, size_t cap);
void nim_board_clear(nim_board *b, int slot); /* a worker that died: its figures go */

#endif
