/* SPDX-License-Identifier: MIT */
/*
 * escape.c: escaping for a terminal (cli_fput_escaped, cli_fput_token)
 * and for JSON (cli_json_quote). It depends on nothing else in cli/ (only
 * on basic/'s UTF-8 decoder), so that the diagnostic writer in exit.c and
 * every other file can use it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "macro.h"

/* True for the n-byte UTF-8 sequence at s when it is a space other than
 * U+0020 (Unicode's Zs, Zl and Zp: what Python's split() and some
 * terminals' word selection split at). */
static bool unicode_space(const unsigned char *s, size_t n)
{
	uint32_t cp = n == 2 ? (s[0] & 0x1fu) << 6 | (s[1] & 0x3fu)
		    : n == 3 ? (s[0] & 0x0fu) << 12 | (s[1] & 0x3fu) << 6 | (s[2] & 0x3fu)
			     : 0;

	return cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* cli_fput_escaped(), and with token also every space escaped. */
static void fput_escaped(FILE *f, const char *str, size_t len, bool token)
{
	const unsigned char *s = (const unsigned char *)str;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(s + i, len - i);

		if (n == 1 && s[i] == '\\') {
			fputs("\\\\", f);
		} else if (n == 1 && s[i] == '\n') {
			fputs("\\n", f);
		} else if (n == 1 && s[i] == '\t') {
			fputs("\\t", f);
		} else if (n == 1 && s[i] >= 0x20 && s[i] < 0x7f && !(token && s[i] == ' ')) {
			fputc(s[i], f);
		} else if (n > 1 && !(n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0) &&
			   !(token && unicode_space(s + i, n))) {
			/* Valid multibyte text passes, but not the C1 controls
			 * (U+0080..U+009F), which some terminals obey. */
			fwrite(s + i, 1, n, f);
			i += n;
			continue;
		} else {
			fprintf(f, "\\x%02x", s[i]);
		}
		i++;
	}
}

void cli_fput_escaped(FILE *f, const char *s, size_t len)
{
	fput_escaped(f, s, len, false);
}

void cli_fput_token(FILE *f, const char *s, size_t len)
{
	fput_escaped(f, s, len, true);
}

/* The most characters cli_json_quote() writes for one byte (\udcXX,
 * \u00XX), and what it adds around them: two quotes and a NUL. */
#define QUOTED_BYTE_MAX 6
#define QUOTED_EXTRA 3

char *cli_json_quote(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	char *out, *p;

	if (len > (SIZE_MAX - QUOTED_EXTRA) / QUOTED_BYTE_MAX)
		return NULL;
	out = malloc(len * QUOTED_BYTE_MAX + QUOTED_EXTRA);
	if (!out)
		return NULL;
	p = out;
	*p++ = '"';
	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(s + i, len - i);

		if (n == 0) {
			/* PEP 383: byte b becomes U+DC80 + b - 0x80, a lone low
			 * surrogate that no valid UTF-8 decodes to, so that
			 * neither the text "\xff" nor any other collides with
			 * the byte 0xff. */
			p += sprintf(p, "\\udc%02x", s[i]);
			i++;
		} else if (n == 1 && (s[i] == '"' || s[i] == '\\')) {
			*p++ = '\\';
			*p++ = (char)s[i++];
		} else if (n == 1 && s[i] < 0x20) {
			p += sprintf(p, "\\u%04x", s[i]);
			i++;
		} else {
			memcpy(p, s + i, n);
			p += n;
			i += n;
		}
	}
	*p++ = '"';
	*p = '\0';
	return out;
}
