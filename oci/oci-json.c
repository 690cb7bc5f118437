/* SPDX-License-Identifier: MIT */
/*
 * oci-json.c: the packaged config.json as a cJSON tree, read strictly and
 * printed back without leaving a copy behind. cJSON is lax where runc's
 * strict decoder is not, keeps numbers only as doubles, and frees what it
 * parsed without wiping it; this file closes each of those gaps. The
 * document may hold secrets: no message quotes it, and every buffer that
 * held a byte of it is wiped before it is freed.
 */
#include <assert.h>
#include <limits.h>
#include <stdio.h>

#include "oci-config.h"

#define ROLE OCI_CONFIG_ROLE

/* The first capacity of the list of number literals, doubled as it fills. */
#define SPANS_FIRST_CAP 64

/* The first buffer oci_json_print() tries: most configs fit in it. */
#define PRINT_FIRST_SIZE 4096

/* The bits of cJSON's type field that hold the type, without its flags. */
#define CJSON_TYPE_MASK 0xff

/* A number literal of the packaged document, as offsets into it. */
struct span {
	size_t off, len;
};

struct spans {
	struct span *v;
	size_t n, cap;
};

void oci_json_wipe(cJSON *item)
{
	for (; item; item = item->next) {
		if (item->valuestring)
			explicit_bzero(item->valuestring, strlen(item->valuestring));
		if (item->string && !(item->type & cJSON_StringIsConst))
			explicit_bzero(item->string, strlen(item->string));
		oci_json_wipe(item->child);
	}
}

void oci_json_wipe_deletep(cJSON **item)
{
	if (*item) {
		oci_json_wipe(*item);
		cJSON_Delete(*item);
	}
}

/* The end of the run of characters a number literal may hold, from s[i]. */
static size_t number_end(const char *s, size_t i, size_t len)
{
	while (i < len && s[i] != '\0' && strchr("0123456789+-.eE", s[i]))
		i++;
	return i;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* True when s[0..len) is exactly a JSON number: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)? */
static bool number_strict(const char *s, size_t len)
{
	size_t i = 0, d;

	if (i < len && s[i] == '-')
		i++;
	if (i < len && s[i] == '0')
		i++;
	else if (i < len && s[i] >= '1' && s[i] <= '9')
		while (i < len && is_digit(s[i]))
			i++;
	else
		return false;
	if (i < len && s[i] == '.') {
		for (d = ++i; i < len && is_digit(s[i]); i++)
			;
		if (i == d)
			return false;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		for (d = i; i < len && is_digit(s[i]); i++)
			;
		if (i == d)
			return false;
	}
	return i == len;
}

/*
 * Checks what cJSON lets through but a strict decoder (runc's Go) does not,
 * and records every number literal. cJSON passes invalid UTF-8 on, skips
 * control characters as if they were blanks, stores "\u0000" as a NUL that
 * silently cuts a string short, and accepts numbers such as "01" or "1.";
 * and it keeps numbers only as doubles, which would round a uint64 such as
 * an rlimit of 18446744073709551615. The literals recorded here are put
 * back verbatim instead.
 *
 * The string boundaries found here are cJSON's own: a string starts and
 * ends at an unescaped quote and a backslash escapes the next byte.
 * Outside strings only number literals contain digits, so for any document
 * cJSON accepts, the literals come in the same order as its number items.
 *
 * The nesting depth is counted here too, before cJSON recurses into the
 * document: a packaged config deeper than OCI_CONFIG_MAX_DEPTH is refused.
 */
static int scan(const char *s, size_t len, struct spans *nums, struct sl_error *reterr)
{
	bool in_string = false;
	unsigned depth = 0;

	if (!utf8_valid(s, len))
		return sl_err(reterr, -EBADMSG, ROLE ": not valid UTF-8");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 && (in_string || (c != '\t' && c != '\n' && c != '\r')))
			return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: control character", i);
		if (in_string) {
			if (c == '"') {
				in_string = false;
			} else if (c == '\\' && i + 1 < len) {
				if (len - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0)
					return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: NUL character in a string",
						      i);
				i++;
			}
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > OCI_CONFIG_MAX_DEPTH)
				return sl_err(reterr, -EBADMSG,
					      ROLE ": byte %zu: nested deeper than the limit of %d levels", i,
					      OCI_CONFIG_MAX_DEPTH);
		} else if (c == '}' || c == ']') {
			if (depth > 0)
				depth--;
		} else if (c == '-' || is_digit((char)c)) {
			size_t end = number_end(s, i, len);

			if (!number_strict(s + i, end - i))
				return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: malformed number", i);
			if (nums->n == nums->cap) {
				size_t cap = nums->cap ? nums->cap * 2 : SPANS_FIRST_CAP;
				struct span *v = realloc(nums->v, cap * sizeof(*v));

				if (!v)
					return sl_err(reterr, -ENOMEM, ROLE ": %s", strerror(ENOMEM));
				nums->v = v;
				nums->cap = cap;
			}
			nums->v[nums->n++] = (struct span){ i, end - i };
			i = end - 1;
		}
	}
	return 0;
}

/* Turns every number item, in document order, into a raw item holding its
 * literal, so that printing reproduces it byte for byte. */
static int numbers_to_raw(cJSON *item, const char *json, const struct spans *nums, size_t *k)
{
	assert(k && *k <= nums->n);
	for (; item; item = item->next) {
		if ((item->type & CJSON_TYPE_MASK) == cJSON_Number) {
			char *lit;

			if (*k >= nums->n)
				return -EBADMSG;
			lit = strndup(json + nums->v[*k].off, nums->v[*k].len);
			if (!lit)
				return -ENOMEM;
			(*k)++;
			item->type = cJSON_Raw | (item->type & cJSON_StringIsConst);
			item->valuestring = lit;
		}
		int r = numbers_to_raw(item->child, json, nums, k);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The value of the four hex digits at s, or -1 when one is not. */
static int hex4(const char *s)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0'
		      : c >= 'a' && c <= 'f' ? c - 'a' + 10
		      : c >= 'A' && c <= 'F' ? c - 'A' + 10
					     : -1;

		/* Any digit that is not one makes the escape invalid (a sum
		 * could come back above zero). */
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * A copy of the document that cJSON accepts or rejects exactly as it does
 * the document, at the same byte, and whose strings hold none of its
 * bytes: every byte inside a string becomes 'x', a \u escape becomes one of
 * the same class (a high or a low surrogate, NUL, or 'A'), other escapes
 * and everything outside strings stay. String boundaries as in scan().
 */
static char *redacted_copy(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	bool in_string = false;

	if (!out)
		return NULL;
	/* s may be NULL when len is 0 (an empty config passed as NULL). */
	if (len)
		memcpy(out, s, len);
	out[len] = '\0';
	for (size_t i = 0; i < len; i++) {
		if (!in_string) {
			in_string = s[i] == '"';
		} else if (s[i] == '"') {
			in_string = false;
		} else if (s[i] == '\\' && i + 1 < len) {
			int cp = s[i + 1] == 'u' && len - i >= 6 ? hex4(s + i + 2) : -1;

			if (cp >= 0)
				memcpy(out + i + 2,
				       cp >= 0xd800 && cp <= 0xdbff   ? "D800"
				       : cp >= 0xdc00 && cp <= 0xdfff ? "DC00"
				       : cp == 0                      ? "0000"
								      : "0041",
				       4);
			i += cp >= 0 ? 5 : 1;
		} else {
			out[i] = 'x';
		}
	}
	return out;
}

int oci_json_parse(const char *json, size_t len, cJSON **ret, struct sl_error *reterr)
{
	_cleanup_(oci_json_wipe_deletep) cJSON *root = NULL;
	_cleanup_free_ struct span *spans_v = NULL;
	_cleanup_free_ char *copy = NULL;
	struct spans nums = { 0 };
	const char *end = NULL;
	size_t k = 0;
	int r;

	assert(ret);
	r = scan(json, len, &nums, reterr);
	spans_v = nums.v;
	if (r < 0)
		return r;
	/* cJSON frees the tree it built so far from a document it rejects
	 * without wiping it: the strings parsed before the error (an
	 * annotation, a packaged env value) would stay in freed memory. So a
	 * copy without them is parsed first, and only a document that copy
	 * shows to be valid is parsed for real. */
	copy = redacted_copy(json, len);
	if (!copy)
		return sl_err(reterr, -ENOMEM, ROLE ": %s", strerror(ENOMEM));
	root = cJSON_ParseWithLengthOpts(copy, len, &end, false);
	if (!root) {
		size_t at = end && end >= copy && end <= copy + len ? (size_t)(end - copy) : len;
		return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: not valid JSON", at);
	}
	cJSON_Delete(root);
	root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root) /* the copy was accepted: only memory can fail here */
		return sl_err(reterr, -ENOMEM, ROLE ": %s", strerror(ENOMEM));
	for (const char *p = end; p < json + len; p++)
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
			return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: data after the document", (size_t)(p - json));
	r = numbers_to_raw(root, json, &nums, &k);
	if (r == 0 && k != nums.n)
		r = -EBADMSG;
	if (r == -ENOMEM)
		return sl_err(reterr, r, ROLE ": %s", strerror(ENOMEM));
	if (r < 0)
		return sl_err(reterr, r, ROLE ": numbers do not parse consistently");
	if (!cJSON_IsObject(root))
		return sl_err(reterr, -EBADMSG, ROLE ": top level: not an object");
	*ret = TAKE_PTR(root);
	return 0;
}

/* Prints the tree compactly into a buffer of our own: cJSON_Print() grows
 * its buffer with realloc, which would leave unwiped copies of the document
 * behind. Compactly, because cJSON's formatted print indents each line by
 * its depth: in issue 15 a 512 KiB packaged config of nested objects came
 * out as 173 MB, written into the staging root (a tmpfs: memory). */
int oci_json_print(cJSON *root, size_t hint, char **ret, size_t *ret_len)
{
	size_t size = hint < PRINT_FIRST_SIZE ? PRINT_FIRST_SIZE : hint;

	assert(root && ret && ret_len);
	for (;;) {
		char *buf, *out;
		size_t len;

		if (size > INT_MAX)
			return -ENOMEM;
		buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		if (!cJSON_PrintPreallocated(root, buf, (int)size, false)) {
			erase_and_free(buf, size);
			size *= 2;
			continue;
		}
		len = strlen(buf);
		out = malloc(len + 1);
		if (out)
			memcpy(out, buf, len + 1);
		erase_and_free(buf, len + 1);
		if (!out)
			return -ENOMEM;
		*ret = out;
		*ret_len = len;
		return 0;
	}
}
