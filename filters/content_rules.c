/*
 * content_rules.c - the content filter's rule file: reading, parsing and
 * compiling it into an immutable rule set
 *
 * NAME
 *	content_rules_load, content_rules_count, content_rules_free
 *
 * SYNOPSIS
 *	#include "content.h"
 *
 *	int  content_rules_load(const char *path, struct content_rules **out,
 *	         char *err, size_t errlen);
 *	size_t content_rules_count(const struct content_rules *);
 *	void content_rules_free(struct content_rules *);
 *
 * DESCRIPTION
 *	The syntax (SCOPE /REGEX/FLAGS ACTION [TEXT]) is in content.h.
 *	content_rules_load() reads the file line by line, compiles every
 *	pattern with PCRE2 (JIT when available) and builds the SMTP reply of
 *	each REJECT and TEMPFAIL rule; the rule set and its PCRE2 match
 *	context (the match, depth and heap limits) are read-only afterwards
 *	and shared by every session.  content_rules_scope_names and
 *	content_rules_actions name the scopes and actions for content.c.
 *
 * DIAGNOSTICS
 *	content_rules_load() returns 0, or -1 with err set to "PATH:LINE:
 *	message" (a bad line) or "PATH: cannot open: reason".
 *
 * LIMITS
 *	Lines up to CONTENT_RULE_LINE_MAX octets, CONTENT_RULES_MAX rules,
 *	reply texts up to CONTENT_TEXT_MAX characters.
 */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <gmime/gmime.h>

#include "content.h"
#include "content_int.h"
#include "strutil.h"

const char *const content_rules_scope_names[CONTENT_SCOPE_COUNT] = {
	[CONTENT_SCOPE_HEADER] = "header",
	[CONTENT_SCOPE_BODY] = "body",
	[CONTENT_SCOPE_MIME] = "mime",
	[CONTENT_SCOPE_FILENAME] = "filename",
};

const struct content_action_def content_rules_actions[CONTENT_ACTION_COUNT] = {
	[CONTENT_ACTION_ACCEPT] = { "ACCEPT", "accept", FMX_ACCEPT },
	[CONTENT_ACTION_TAG] = { "TAG", "tag", FMX_TAG },
	[CONTENT_ACTION_QUARANTINE] = { "QUARANTINE", "quarantine", FMX_QUARANTINE },
	[CONTENT_ACTION_TEMPFAIL] = { "TEMPFAIL", "tempfail", FMX_TEMPFAIL },
	[CONTENT_ACTION_REJECT] = { "REJECT", "reject", FMX_REJECT },
	[CONTENT_ACTION_DISCARD] = { "DISCARD", "discard", FMX_DISCARD },
	[CONTENT_ACTION_WARN] = { "WARN", "warn", FMX_CONTINUE },
};

/* ---------------------------------------------------------------- */
/* Rule file */

__attribute__((format(printf, 5, 6)))
static void
content_rules_err(char *err, size_t errlen, const char *path, unsigned line,
    const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	if (err == NULL || errlen == 0)
		return;
	if (line > 0)
		n = snprintf(err, errlen, "%s:%u: ", path, line);
	else
		n = snprintf(err, errlen, "%s: ", path);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	/*
	 * The message quotes words of the file: a CR or an escape byte in
	 * one would split or garble the log line and the -t output.
	 */
	for (p = err + n; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p > '~')
			*p = '?';
}

int
content_rules_is_space(int c)
{
	return c == ' ' || c == '\t';
}

/* Matches a word of length len against name, ignoring case. */
static int
content_rules_word_is(const char *word, size_t len, const char *name)
{
	return strlen(name) == len && str_ncasecmp(word, name, len) == 0;
}

/*
 * Reads one line into buf (size bytes, NUL-terminated, no line end).
 * Returns 1 for a line, 0 at end of file, -1 when the line was longer
 * than size - 1 bytes, -2 when it held a NUL byte; the rest of a bad
 * line is consumed, so line numbers stay right.  getc() rather than
 * fgets() because fgets() cannot tell a NUL byte from the end.
 */
static int
content_rules_getline(FILE *fp, char *buf, size_t size)
{
	size_t len = 0;
	int c, any = 0, over = 0, nul = 0;

	while ((c = getc(fp)) != EOF) {
		any = 1;
		if (c == '\n')
			break;
		if (c == '\0')
			nul = 1;
		if (len < size - 1)
			buf[len++] = (char)c;
		else
			over = 1;
	}
	buf[len] = '\0';
	if (!any)
		return 0;
	/* A file edited on Windows still loads. */
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	if (over)
		return -1;
	if (nul)
		return -2;
	return 1;
}

/*
 * "X.Y.Z" (RFC 3463: class 2, 4 or 5, then 1-3 and 1-3 digits) at the
 * start of s, followed by a space or the end: its length, else 0.
 */
static size_t
content_rules_esc_len(const char *s)
{
	size_t i = 0, n;
	int part;

	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	if (s[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (n = 0; s[i] >= '0' && s[i] <= '9'; i++)
			n++;
		if (n < 1 || n > 3)
			return 0;
		if (part == 0) {
			if (s[i] != '.')
				return 0;
			i++;
		}
	}
	if (s[i] != '\0' && s[i] != ' ')
		return 0;
	return i;
}

/*
 * Builds the SMTP reply of a REJECT or TEMPFAIL rule from its text.
 * The reply is validated again by api->set_reply(); checking here too
 * turns a bad rule into a load error instead of a run-time surprise.
 */
static int
content_rules_reply(struct content_rule *r, const char *path, unsigned line,
    char *err, size_t errlen)
{
	const char *code, *esc, *text, *deftext;
	char buf[CONTENT_TEXT_MAX + 64];
	size_t esclen = 0;
	char class;

	if (r->action == CONTENT_ACTION_REJECT) {
		code = "550";
		esc = "5.7.1";
		class = '5';
		deftext = "Message content rejected";
	} else {
		code = "451";
		esc = "4.7.1";
		class = '4';
		deftext = "Message content deferred, try again later";
	}
	text = r->text != NULL ? r->text : "";
	if ((esclen = content_rules_esc_len(text)) > 0) {
		if (text[0] != class) {
			content_rules_err(err, errlen, path, line,
			    "enhanced status code %.*s does not match %s "
			    "(expected %c.X.X)", (int)esclen, text,
			    content_rules_actions[r->action].name, class);
			return -1;
		}
		esc = text;
		text += esclen;
		while (*text == ' ')
			text++;
	}
	if (*text == '\0')
		text = deftext;
	snprintf(buf, sizeof buf, "%s %.*s %s", code,
	    esclen > 0 ? (int)esclen : (int)strlen(esc), esc, text);
	if ((r->reply = strdup(buf)) == NULL) {
		content_rules_err(err, errlen, path, line, "out of memory");
		return -1;
	}
	return 0;
}

/*
 * Compiles pattern[0..len) with the rule's flags.  Patterns are byte
 * patterns; one that asks for UTF with (*UTF) is recompiled with
 * PCRE2_MATCH_INVALID_UTF, because a plain UTF pattern makes
 * pcre2_match() fail on any invalid UTF-8 subject, which a spammer
 * would then use to slip past the rule.
 */
static pcre2_code *
content_rules_compile(const char *pattern, size_t len, uint32_t opts,
    const char *path, unsigned line, char *err, size_t errlen)
{
	PCRE2_UCHAR msg[256];
	PCRE2_SIZE off;
	pcre2_code *re;
	uint32_t all = 0;
	int code;

	re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &off, NULL);
	if (re != NULL && pcre2_pattern_info(re, PCRE2_INFO_ALLOPTIONS, &all) == 0 &&
	    (all & PCRE2_UTF) != 0) {
		pcre2_code_free(re);
		re = pcre2_compile((PCRE2_SPTR)pattern, len,
		    opts | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
	}
	if (re == NULL) {
		if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
			snprintf((char *)msg, sizeof msg, "error %d", code);
		content_rules_err(err, errlen, path, line,
		    "regex error at offset %zu: %s", (size_t)off, (char *)msg);
		return NULL;
	}
	/* JIT is an optimisation: without it (no JIT support) we interpret. */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

static void
content_rules_clear(struct content_rule *r)
{
	pcre2_code_free(r->re);
	free(r->text);
	free(r->reply);
	memset(r, 0, sizeof *r);
}

/* One rule file line being parsed, and where its error goes. */
struct content_line {
	const char	*path;
	unsigned	 line;
	char		*err;
	size_t		 errlen;
	const char	*start;		/* the whole line, for error columns */
	char		*s;		/* how far the parse got */
};

static void
content_rules_skip_space(struct content_line *l)
{
	while (content_rules_is_space(*l->s))
		l->s++;
}

/* The scope word: 0, or -1 (error written). */
static int
content_rules_scope(struct content_line *l, struct content_rule *r)
{
	const char	*word;
	size_t		 wlen;
	int		 i;

	for (word = l->s; *l->s != '\0' && !content_rules_is_space(*l->s); l->s++)
		;
	wlen = (size_t)(l->s - word);
	for (i = 0; i < CONTENT_SCOPE_COUNT; i++)
		if (content_rules_word_is(word, wlen, content_rules_scope_names[i]))
			break;
	if (i == CONTENT_SCOPE_COUNT) {
		content_rules_err(l->err, l->errlen, l->path, l->line, "unknown scope \"%.*s\" "
		    "(expected header, body, mime or filename)",
		    wlen > CONTENT_NAME_SHOW ? CONTENT_NAME_SHOW : (int)wlen, word);
		return -1;
	}
	r->scope = (enum content_scope)i;
	return 0;
}

/* The flags after the closing '/': 0, or -1 (error written). */
static int
content_rules_flags(struct content_line *l, uint32_t *opts)
{
	char *s;

	for (s = l->s; *s != '\0' && !content_rules_is_space(*s); s++) {
		switch (*s) {
		case 'i':
			*opts |= PCRE2_CASELESS;
			break;
		case 'm':
			*opts |= PCRE2_MULTILINE;
			break;
		case 's':
			*opts |= PCRE2_DOTALL;
			break;
		case 'x':
			*opts |= PCRE2_EXTENDED;
			break;
		default:
			if ((unsigned char)*s >= 0x21 && (unsigned char)*s < 0x7f)
				content_rules_err(l->err, l->errlen, l->path, l->line,
				    "unknown flag '%c' (expected i, m, s or x)", *s);
			else
				content_rules_err(l->err, l->errlen, l->path, l->line,
				    "unknown flag byte 0x%02x (expected i, m, s or x)",
				    (unsigned char)*s);
			return -1;
		}
	}
	l->s = s;
	return 0;
}

/* /pattern/flags: the pattern as written, its length, PCRE2 options. */
static int
content_rules_pattern(struct content_line *l, const char **pat, size_t *plen,
    uint32_t *opts)
{
	char *s;

	content_rules_skip_space(l);
	s = l->s;
	if (*s == '\0') {
		content_rules_err(l->err, l->errlen, l->path, l->line, "missing /pattern/");
		return -1;
	}
	if (*s == '!') {
		content_rules_err(l->err, l->errlen, l->path, l->line,
		    "negated patterns (!/.../) are not supported");
		return -1;
	}
	if (*s != '/') {
		content_rules_err(l->err, l->errlen, l->path, l->line,
		    "pattern must be delimited by '/', found '%c'",
		    (unsigned char)*s >= 0x21 && (unsigned char)*s < 0x7f ? *s : '?');
		return -1;
	}
	*pat = ++s;
	while (*s != '\0' && *s != '/') {
		if (*s == '\\' && s[1] != '\0')
			s++;	/* "\/" and "\\" stay in the pattern as written */
		s++;
	}
	if (*s != '/') {
		content_rules_err(l->err, l->errlen, l->path, l->line,
		    "unterminated pattern (no closing '/'; write '/' inside as '\\/')");
		return -1;
	}
	*plen = (size_t)(s - *pat);
	if (*plen == 0) {
		content_rules_err(l->err, l->errlen, l->path, l->line, "empty pattern");
		return -1;
	}
	l->s = s + 1;
	return content_rules_flags(l, opts);
}

/* The action word (DEFER is TEMPFAIL): 0, or -1 (error written). */
static int
content_rules_action(struct content_line *l, struct content_rule *r)
{
	const char	*word;
	size_t		 wlen;
	int		 i;

	content_rules_skip_space(l);
	if (*l->s == '\0') {
		content_rules_err(l->err, l->errlen, l->path, l->line,
		    "missing action after /pattern/");
		return -1;
	}
	for (word = l->s; *l->s != '\0' && !content_rules_is_space(*l->s); l->s++)
		;
	wlen = (size_t)(l->s - word);
	for (i = 0; i < CONTENT_ACTION_COUNT; i++)
		if (content_rules_word_is(word, wlen, content_rules_actions[i].name))
			break;
	if (i == CONTENT_ACTION_COUNT && content_rules_word_is(word, wlen, "DEFER"))
		i = CONTENT_ACTION_TEMPFAIL;
	if (i == CONTENT_ACTION_COUNT) {
		content_rules_err(l->err, l->errlen, l->path, l->line, "unknown action \"%.*s\" "
		    "(expected ACCEPT, TAG, QUARANTINE, TEMPFAIL, DEFER, REJECT, "
		    "DISCARD or WARN)",
		    wlen > CONTENT_NAME_SHOW ? CONTENT_NAME_SHOW : (int)wlen, word);
		return -1;
	}
	r->action = (enum content_action)i;
	return 0;
}

/* Optional text: it ends up in SMTP replies and log lines. */
static int
content_rules_text(struct content_line *l, struct content_rule *r)
{
	const char	*c, *s;
	size_t		 tlen;

	content_rules_skip_space(l);
	s = l->s;
	tlen = strlen(s);
	while (tlen > 0 && content_rules_is_space(s[tlen - 1]))
		tlen--;
	for (c = s; c < s + tlen; c++) {
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
			content_rules_err(l->err, l->errlen, l->path, l->line,
			    "text contains a control or non-ASCII byte 0x%02x "
			    "at column %zu", (unsigned char)*c,
			    (size_t)(c - l->start) + 1);
			return -1;
		}
	}
	if (tlen > CONTENT_TEXT_MAX) {
		content_rules_err(l->err, l->errlen, l->path, l->line,
		    "text longer than %d characters", CONTENT_TEXT_MAX);
		return -1;
	}
	if (tlen > 0 && (r->text = strndup(s, tlen)) == NULL) {
		content_rules_err(l->err, l->errlen, l->path, l->line, "out of memory");
		return -1;
	}
	return 0;
}

/* Append r (taken over, or cleared on error): 0, or -1 (error written). */
static int
content_rules_add(struct content_rules *rules, struct content_rule *r,
    struct content_line *l)
{
	if (rules->n == rules->cap) {
		struct content_rule *v;
		size_t cap = rules->cap ? rules->cap * 2 : 16;

		if (rules->n >= CONTENT_RULES_MAX) {
			content_rules_err(l->err, l->errlen, l->path, l->line,
			    "too many rules (limit %d)", CONTENT_RULES_MAX);
			content_rules_clear(r);
			return -1;
		}
		if ((v = reallocarray(rules->v, cap, sizeof *v)) == NULL) {
			content_rules_err(l->err, l->errlen, l->path, l->line,
			    "out of memory");
			content_rules_clear(r);
			return -1;
		}
		rules->v = v;
		rules->cap = cap;
	}
	rules->v[rules->n++] = *r;
	rules->scopes |= 1u << r->scope;
	return 0;
}

/* Parses one line; blank and comment lines add nothing. */
static int
content_rules_parse(struct content_rules *rules, char *s, unsigned line,
    char *err, size_t errlen)
{
	struct content_line l = { rules->path, line, err, errlen, s, s };
	struct content_rule r;
	const char	*pat;
	size_t		 plen;
	uint32_t	 opts = 0;

	content_rules_skip_space(&l);
	if (*l.s == '\0' || *l.s == '#')
		return 0;
	memset(&r, 0, sizeof r);
	r.line = line;
	if (content_rules_scope(&l, &r) == -1 ||
	    content_rules_pattern(&l, &pat, &plen, &opts) == -1 ||
	    content_rules_action(&l, &r) == -1)
		return -1;
	if (content_rules_text(&l, &r) == -1)
		return -1;
	if ((r.action == CONTENT_ACTION_REJECT || r.action == CONTENT_ACTION_TEMPFAIL) &&
	    content_rules_reply(&r, l.path, line, err, errlen) == -1) {
		content_rules_clear(&r);
		return -1;
	}
	if ((r.re = content_rules_compile(pat, plen, opts, l.path, line, err,
	    errlen)) == NULL) {
		content_rules_clear(&r);
		return -1;
	}
	return content_rules_add(rules, &r, &l);
}

int
content_rules_load(const char *path, struct content_rules **out, char *err,
    size_t errlen)
{
	char buf[CONTENT_RULE_LINE_MAX + 1];
	struct content_rules *rules;
	struct stat st;
	unsigned line = 0;
	FILE *fp;
	int rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((fp = fopen(path, "re")) == NULL) {
		content_rules_err(err, errlen, path, 0, "cannot open: %s", strerror(errno));
		return -1;
	}
	/* fopen() opens a directory fine; reading it then fails obscurely. */
	if (fstat(fileno(fp), &st) == -1) {
		content_rules_err(err, errlen, path, 0, "cannot open: %s", strerror(errno));
		fclose(fp);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		content_rules_err(err, errlen, path, 0, "cannot open: %s",
		    S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
		fclose(fp);
		return -1;
	}
	if ((rules = calloc(1, sizeof *rules)) == NULL ||
	    (rules->path = strdup(path)) == NULL ||
	    (rules->mctx = pcre2_match_context_create(NULL)) == NULL) {
		content_rules_err(err, errlen, path, 0, "out of memory");
		goto fail;
	}
	pcre2_set_match_limit(rules->mctx, CONTENT_MATCH_LIMIT);
	pcre2_set_depth_limit(rules->mctx, CONTENT_DEPTH_LIMIT);
	pcre2_set_heap_limit(rules->mctx, CONTENT_HEAP_LIMIT);

	while ((rc = content_rules_getline(fp, buf, sizeof buf)) != 0) {
		line++;
		if (rc == -1) {
			content_rules_err(err, errlen, path, line,
			    "line longer than %d bytes", CONTENT_RULE_LINE_MAX);
			goto fail;
		}
		if (rc == -2) {
			content_rules_err(err, errlen, path, line, "NUL byte in line");
			goto fail;
		}
		if (content_rules_parse(rules, buf, line, err, errlen) == -1)
			goto fail;
	}
	if (ferror(fp)) {
		content_rules_err(err, errlen, path, 0, "read error: %s", strerror(errno));
		goto fail;
	}
	fclose(fp);
	*out = rules;
	return 0;

fail:
	fclose(fp);
	content_rules_free(rules);
	return -1;
}

size_t
content_rules_count(const struct content_rules *rules)
{
	return rules != NULL ? rules->n : 0;
}

void
content_rules_free(struct content_rules *rules)
{
	size_t i;

	if (rules == NULL)
		return;
	for (i = 0; i < rules->n; i++)
		content_rules_clear(&rules->v[i]);
	free(rules->v);
	pcre2_match_context_free(rules->mctx);
	free(rules->path);
	free(rules);
}
