/* SPDX-License-Identifier: MIT */
/*
 * escape.h: how the program writes bytes it does not control (paths,
 * labels, library messages) to a terminal, a log or a JSON document.
 * escape.c depends on nothing else in cli/, so that every other file
 * (exit.c's diagnostic writer first) can use it without a loop.
 */
#ifndef STAGELOG_CLI_ESCAPE_H
#define STAGELOG_CLI_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

/*
 * Writes len bytes for a terminal: valid printable UTF-8 as is,
 * backslash, newline and tab as \\, \n, \t, and every other byte as \xNN,
 * so that a hostile file name can neither break a line nor send escapes.
 */
void cli_fput_escaped(FILE *f, const char *s, size_t len);

/*
 * cli_fput_escaped(), and every space as \xNN too (U+0020 as
 * \x20; a Unicode space as the \xNN of its bytes), so that the bytes make
 * one whitespace-free token: a cell of a table, or a path in a line that
 * other words follow. Reading back \\, \n, \t and \xNN gives the bytes.
 */
void cli_fput_token(FILE *f, const char *s, size_t len);

/*
 * len bytes as a JSON string literal, quotes included, that no
 * other bytes give: valid UTF-8 as JSON writes it (", \ and controls
 * escaped), and each byte that is not part of valid UTF-8 as \udcXX, the
 * lone surrogate U+DC80 + b - 0x80 of PEP 383's "surrogateescape", which
 * no valid UTF-8 decodes to. Python gets the bytes back with
 * json.loads(s).encode("utf-8", "surrogateescape"). Returns NULL when out
 * of memory.
 */
char *cli_json_quote(const char *s, size_t len);

#endif
