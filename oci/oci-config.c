/* SPDX-License-Identifier: MIT */
/*
 * oci-config.c: turns a packaged config.json into the staged one. The
 * document is the packager's and the environment is the deployer's; both
 * may hold secrets, so no message quotes either, and every buffer that
 * held a byte of them is wiped before it is freed.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>

#include "oci-private.h"

#define ROLE "bad packaged config"

/* A number literal of the packaged document, as offsets into it. */
struct span {
	size_t off, len;
};

struct spans {
	struct span *v;
	size_t n, cap;
};

/* Zeroes every string of the tree (keys, strings, raw numbers) so that
 * cJSON_Delete() frees nothing that still holds a packaged or env value. */
static void wipe_tree(cJSON *item)
{
	for (; item; item = item->next) {
		if (item->valuestring)
			explicit_bzero(item->valuestring, strlen(item->valuestring));
		if (item->string && !(item->type & cJSON_StringIsConst))
			explicit_bzero(item->string, strlen(item->string));
		wipe_tree(item->child);
	}
}

static void wipe_deletep(cJSON **item)
{
	if (*item) {
		wipe_tree(*item);
		cJSON_Delete(*item);
	}
}

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
					return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: NUL character in a string", i);
				i++;
			}
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > OCI_CONFIG_MAX_DEPTH)
				return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: nested deeper than the limit of %d levels",
					      i, OCI_CONFIG_MAX_DEPTH);
		} else if (c == '}' || c == ']') {
			if (depth > 0)
				depth--;
		} else if (c == '-' || is_digit((char)c)) {
			size_t end = number_end(s, i, len);

			if (!number_strict(s + i, end - i))
				return sl_err(reterr, -EBADMSG, ROLE ": byte %zu: malformed number", i);
			if (nums->n == nums->cap) {
				size_t cap = nums->cap ? nums->cap * 2 : 64;
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
	for (; item; item = item->next) {
		if ((item->type & 0xff) == cJSON_Number) {
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

/*
 * True when key could be taken for want (lowercase ASCII) by Go's
 * encoding/json, which matches keys case-insensitively and folds the
 * Kelvin sign to 'k', the long s to 's', and the dotted and dotless I
 * to 'i'.
 */
static bool key_folds_to(const char *key, const char *want)
{
	const unsigned char *k = (const unsigned char *)key;

	for (; *want; want++) {
		char c;

		if (k[0] < 0x80) {
			c = (char)(k[0] >= 'A' && k[0] <= 'Z' ? k[0] - 'A' + 'a' : k[0]);
			k += 1;
		} else if (k[0] == 0xe2 && k[1] == 0x84 && k[2] == 0xaa) {
			c = 'k';
			k += 3;
		} else if (k[0] == 0xc5 && k[1] == 0xbf) {
			c = 's';
			k += 2;
		} else if (k[0] == 0xc4 && (k[1] == 0xb0 || k[1] == 0xb1)) {
			c = 'i';
			k += 2;
		} else {
			return false;
		}
		if (c != (*want >= 'A' && *want <= 'Z' ? *want - 'A' + 'a' : *want))
			return false;
	}
	return *k == '\0';
}

/*
 * Finds the member want of obj. A second member that a case-insensitive
 * decoder could read as want (or the only one, spelt differently) is
 * refused: the runtime would take the last such member, which is not the
 * one written here, and a hostID left behind that way could map the
 * container to host root. *ret is NULL when there is no such member.
 */
static int member(cJSON *obj, const char *want, const char *where, cJSON **ret, struct sl_error *reterr)
{
	cJSON *found = NULL;
	unsigned n = 0;

	for (cJSON *c = obj->child; c; c = c->next) {
		if (!c->string || !key_folds_to(c->string, want))
			continue;
		n++;
		if (strcmp(c->string, want) == 0)
			found = c;
	}
	if (n > 1 || (n == 1 && !found))
		return sl_err(reterr, -EBADMSG, ROLE ": %s: ambiguous key \"%s\"", where, want);
	*ret = found;
	return 0;
}

/* Puts item into obj under key, in place of old (wiped first) or last. */
static int set_member(cJSON *obj, cJSON *old, const char *key, cJSON *item)
{
	if (!old)
		return cJSON_AddItemToObject(obj, key, item) ? 0 : -ENOMEM;
	item->string = strdup(key);
	if (!item->string)
		return -ENOMEM;
	wipe_tree(old->child);
	if (old->valuestring)
		explicit_bzero(old->valuestring, strlen(old->valuestring));
	return cJSON_ReplaceItemViaPointer(obj, old, item) ? 0 : -ENOMEM;
}

struct env_ref {
	const char *name;
	size_t idx;
};

static int env_ref_cmp(const void *a, const void *b)
{
	const struct env_ref *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * The value of name (len bytes) in the packaged process.env, old (an array,
 * or NULL): that of its last "NAME=VALUE" string, which is what a runtime
 * that sets the variables in order (runc does) gives the process. NULL when
 * it is not there.
 */
static const char *packaged_value(const cJSON *old, const char *name, size_t len)
{
	const char *found = NULL;
	const cJSON *item;

	cJSON_ArrayForEach(item, old)
	{
		const char *s = cJSON_GetStringValue(item);

		if (s && strncmp(s, name, len) == 0 && s[len] == '=')
			found = s + len + 1;
	}
	return found;
}

/*
 * Builds the new process.env: one "NAME=VALUE" per distinct name, at the
 * position of its first occurrence with the value of its last (as a
 * command line that repeats a name means the later value, while the
 * variable keeps its place). A variable with a NULL value is kept: its
 * value is the packaged one, from old, and never one from our own
 * environment, which is the deployer's and may hold anything. Sorting
 * makes that linear-logarithmic even for an env file with a quarter
 * million lines.
 */
static int env_array(const struct sl_env_var *env, size_t n, const cJSON *old, struct sl_oci_notes *notes,
		     cJSON **ret, struct sl_error *reterr)
{
	_cleanup_(wipe_deletep) cJSON *arr = NULL;
	_cleanup_free_ struct env_ref *refs = NULL;
	_cleanup_free_ size_t *pick = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *problem;

		if (!env[i].name)
			return sl_err(reterr, -EINVAL, "bad environment variable: variable %zu: missing name or value",
				      i + 1);
		if (!oci_env_name_valid(env[i].name, strlen(env[i].name)))
			return sl_err(reterr, -EINVAL,
				      "bad environment variable: variable %zu: name does not match [A-Za-z_][A-Za-z0-9_]*",
				      i + 1);
		if (!env[i].value) {
			/* The name is not secret, but the caller names the
			 * option it came from; the index is enough. */
			if (!packaged_value(old, env[i].name, strlen(env[i].name))) {
				if (notes)
					notes->missing_kept = i;
				return sl_err(reterr, -EINVAL,
					      "bad environment variable: variable %zu: kept, but not in the packaged "
					      "process.env",
					      i + 1);
			}
			continue;
		}
		problem = oci_env_value_problem(env[i].value, strlen(env[i].value));
		if (problem)
			return sl_err(reterr, -EINVAL, "bad environment variable: variable %zu: %s", i + 1, problem);
	}

	arr = cJSON_CreateArray();
	refs = calloc(n ? n : 1, sizeof(*refs));
	pick = calloc(n ? n : 1, sizeof(*pick));
	if (!arr || !refs || !pick)
		return sl_err(reterr, -ENOMEM, "cannot build process.env: %s", strerror(ENOMEM));
	for (size_t i = 0; i < n; i++) {
		refs[i] = (struct env_ref){ env[i].name, i };
		pick[i] = SIZE_MAX;
	}
	qsort(refs, n, sizeof(*refs), env_ref_cmp);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && strcmp(refs[j].name, refs[i].name) == 0; j++)
			;
		pick[refs[i].idx] = refs[j - 1].idx;
	}

	for (size_t i = 0; i < n; i++) {
		const char *value;
		size_t nl, vl;
		char *s;
		cJSON *str;

		if (pick[i] == SIZE_MAX)
			continue;
		nl = strlen(env[i].name);
		value = env[pick[i]].value;
		if (!value)
			value = packaged_value(old, env[i].name, nl);
		vl = strlen(value);
		s = malloc(nl + vl + 2);
		if (!s)
			return sl_err(reterr, -ENOMEM, "cannot build process.env: %s", strerror(ENOMEM));
		memcpy(s, env[i].name, nl);
		s[nl] = '=';
		memcpy(s + nl + 1, value, vl + 1);
		str = cJSON_CreateString(s);
		erase_and_free(s, nl + vl + 2);
		if (!str || !cJSON_AddItemToArray(arr, str)) {
			wipe_deletep(&str);
			return sl_err(reterr, -ENOMEM, "cannot build process.env: %s", strerror(ENOMEM));
		}
	}
	*ret = TAKE_PTR(arr);
	return 0;
}

/*
 * True when process.args[0] is a string that is not an absolute path and
 * env (the staged process.env) has no PATH: the runtime looks such a
 * program up with the process's PATH, and without one it may not find it.
 * The exact key "args" is read, as a check that warns and never refuses.
 */
static bool lacks_path(const cJSON *process, const cJSON *env)
{
	const cJSON *args = cJSON_GetObjectItemCaseSensitive(process, "args");
	const char *arg0 = cJSON_GetStringValue(cJSON_GetArrayItem(args, 0));
	const cJSON *item;

	if (!cJSON_IsArray(args) || !arg0 || arg0[0] == '/')
		return false;
	cJSON_ArrayForEach(item, env)
	{
		const char *s = cJSON_GetStringValue(item);

		if (s && strncmp(s, "PATH=", 5) == 0)
			return false;
	}
	return true;
}

/* Sets hostID to id in every mapping of linux.<key>. */
static int set_host_ids(cJSON *linux_obj, const char *key, unsigned long id, struct sl_error *reterr)
{
	char where[64], lit[24];
	cJSON *arr, *m, *old;
	size_t i = 0;
	int r;

	r = member(linux_obj, key, "linux", &arr, reterr);
	if (r < 0 || !arr)
		return r;
	if (!cJSON_IsArray(arr))
		return sl_err(reterr, -EBADMSG, ROLE ": linux.%s: not an array", key);
	snprintf(lit, sizeof(lit), "%lu", id);
	cJSON_ArrayForEach(m, arr) {
		cJSON *num;

		snprintf(where, sizeof(where), "linux.%s[%zu]", key, i++);
		if (!cJSON_IsObject(m))
			return sl_err(reterr, -EBADMSG, ROLE ": %s: not an object", where);
		r = member(m, "hostID", where, &old, reterr);
		if (r < 0)
			return r;
		/* A raw literal prints exactly, with no trip through a double. */
		num = cJSON_CreateRaw(lit);
		if (!num)
			return sl_err(reterr, -ENOMEM, ROLE ": %s", strerror(ENOMEM));
		r = set_member(m, old, "hostID", num);
		if (r < 0) {
			cJSON_Delete(num);
			return sl_err(reterr, r, ROLE ": %s", strerror(-r));
		}
	}
	return 0;
}

/* Prints the tree compactly into a buffer of our own: cJSON_Print() grows
 * its buffer with realloc, which would leave unwiped copies of the document
 * behind. Compactly, because cJSON's formatted print indents each line by
 * its depth: in issue 15 a 512 KiB packaged config of nested objects came
 * out as 173 MB, written into the staging root (a tmpfs: memory). */
static int print_wiped(cJSON *root, size_t hint, char **ret, size_t *ret_len)
{
	size_t size = hint < 4096 ? 4096 : hint;

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

static int hex4(const char *s)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
			c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

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
				memcpy(out + i + 2, cp >= 0xd800 && cp <= 0xdbff ? "D800" : cp >= 0xdc00 && cp <= 0xdfff ? "DC00" :
						    cp == 0 ? "0000" : "0041", 4);
			i += cp >= 0 ? 5 : 1;
		} else {
			out[i] = 'x';
		}
	}
	return out;
}

/* Parses the packaged config strictly: every number kept as written, no
 * trailing data. On success *ret owns the tree. */
static int parse_config(const char *json, size_t len, cJSON **ret, struct sl_error *reterr)
{
	_cleanup_(wipe_deletep) cJSON *root = NULL;
	_cleanup_free_ struct span *spans_v = NULL;
	_cleanup_free_ char *copy = NULL;
	struct spans nums = { 0 };
	const char *end = NULL;
	size_t k = 0;
	int r;

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

/* Finds process (an object) and its env (an array, or absent). */
static int find_process(cJSON *root, cJSON **ret_process, cJSON **ret_env, struct sl_error *reterr)
{
	cJSON *process, *old_env;
	int r;

	r = member(root, "process", "top level", &process, reterr);
	if (r < 0)
		return r;
	if (!process)
		return sl_err(reterr, -EBADMSG, ROLE ": process: missing");
	if (!cJSON_IsObject(process))
		return sl_err(reterr, -EBADMSG, ROLE ": process: not an object");
	r = member(process, "env", "process", &old_env, reterr);
	if (r < 0)
		return r;
	if (old_env && !cJSON_IsArray(old_env))
		return sl_err(reterr, -EBADMSG, ROLE ": process.env: not an array");
	*ret_process = process;
	*ret_env = old_env;
	return 0;
}

/* Sets every hostID of linux.uidMappings and gidMappings, when linux is
 * there. */
static int set_mappings(cJSON *root, uid_t uid, gid_t gid, struct sl_error *reterr)
{
	cJSON *linux_obj;
	int r;

	r = member(root, "linux", "top level", &linux_obj, reterr);
	if (r < 0 || !linux_obj)
		return r;
	if (!cJSON_IsObject(linux_obj))
		return sl_err(reterr, -EBADMSG, ROLE ": linux: not an object");
	r = set_host_ids(linux_obj, "uidMappings", (unsigned long)uid, reterr);
	return r < 0 ? r : set_host_ids(linux_obj, "gidMappings", (unsigned long)gid, reterr);
}

int oci_config_transform_notes(const char *json, size_t len, const struct sl_env_var *env, size_t n_env, uid_t uid,
			       gid_t gid, struct sl_oci_notes *notes, char **ret, size_t *ret_len, struct sl_error *reterr)
{
	_cleanup_(wipe_deletep) cJSON *root = NULL;
	cJSON *process = NULL, *old_env = NULL, *new_env = NULL;
	size_t hint;
	int r;

	if (notes)
		*notes = (struct sl_oci_notes){ .missing_kept = SIZE_MAX };
	if ((!json && len > 0) || (!env && n_env > 0) || !ret || !ret_len)
		return sl_err(reterr, -EINVAL, ROLE ": invalid argument");
	if (len > OCI_CONFIG_MAX)
		return sl_err(reterr, -EBADMSG, ROLE ": larger than the limit of %zu MiB", OCI_CONFIG_MAX_MIB);
	r = parse_config(json, len, &root, reterr);
	if (r == 0)
		r = find_process(root, &process, &old_env, reterr);
	if (r == 0)
		r = set_mappings(root, uid, gid, reterr);
	if (r < 0)
		return r;

	/* The environment goes in last, after every check of the document,
	 * so that it is in the tree for as short a time as possible. */
	r = env_array(env, n_env, old_env, notes, &new_env, reterr);
	if (r < 0)
		return r;
	if (notes)
		notes->no_path = lacks_path(process, new_env);
	r = set_member(process, old_env, "env", new_env);
	if (r < 0) {
		wipe_deletep(&new_env);
		return sl_err(reterr, r, ROLE ": %s", strerror(-r));
	}

	/* Printed compactly, a document is mostly no longer than it was
	 * written, plus the environment (escapes may grow it up to six times)
	 * and the 5 bytes cJSON_PrintPreallocated() asks for; print_wiped()
	 * doubles the buffer in the rare case (many mappings gaining a hostID,
	 * see OCI_CONFIG_GROWTH) where this falls short. */
	hint = len + OCI_CONFIG_SLACK + 5;
	for (size_t i = 0; i < n_env; i++)
		/* A kept value is no longer printed than it was written in
		 * the packaged document, which len counts already. */
		hint += OCI_CONFIG_ESCAPE * (strlen(env[i].name) + 1 + (env[i].value ? strlen(env[i].value) : 0)) + 3;
	r = print_wiped(root, hint, ret, ret_len);
	if (r < 0)
		return sl_err(reterr, r, ROLE ": cannot print: %s", strerror(-r));
	return 0;
}

int oci_config_transform(const char *json, size_t len, const struct sl_env_var *env, size_t n_env, uid_t uid,
			 gid_t gid, char **ret, size_t *ret_len, struct sl_error *reterr)
{
	return oci_config_transform_notes(json, len, env, n_env, uid, gid, NULL, ret, ret_len, reterr);
}

void oci_config_free(char *buf, size_t len)
{
	erase_and_free(buf, len);
}
