/*
 * content.c - the built-in content filter: header, body, MIME and file
 * name rules in the spirit of Postfix header_checks/body_checks
 *
 * NAME
 *	content_filter
 *
 * DESCRIPTION
 *	The rule file syntax, scopes and evaluation order are described in
 *	content.h.  This file is written against frontmx_filter.h alone, so
 *	the content filter is also the proof that the module API is enough
 *	for a real filter.
 *
 *	Header rules run in on_header, body rules in on_body (lines are
 *	reassembled across chunks in a buffer that grows to the longest line
 *	the core let through, at most 1 MiB), MIME and file name
 *	rules in on_eom: GMime parses the message through a small read-only
 *	GMimeStream over api->msg_read(), so the message is never copied
 *	into memory a second time (the parser, being given a seekable
 *	stream, keeps part contents as sub-streams of ours instead of
 *	buffering them).
 *
 *	Every PCRE2 match runs under a match, depth and heap limit: the
 *	subjects are hostile, the patterns are the administrator's, and one
 *	careless pattern must not let a message burn a worker's CPU.  A limit
 *	hit counts as "no match" for that subject and is logged.
 *
 * THREADING
 *	The compiled rules (and the PCRE2 match context, which pcre2_match()
 *	only reads) are immutable after init and shared by every session;
 *	the match data, which pcre2_match() writes, lives in the per-message
 *	state.  The one piece of process-global state is the pthread_once
 *	that runs g_mime_init() (not thread-safe, reference-counted without
 *	a lock) and registers our stream type.
 *
 * DIAGNOSTICS
 *	Run-time log lines start with "content:" and are key=value.
 *
 * FILES
 *	content.c	this filter: options, instances, matching, the
 *			GMimeStream over the spool, the MIME walk, hooks.
 *	content_rules.c	the rule file: parsing, compiling, freeing.
 *	content_int.h	the compiled rules and limits shared by the two.
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
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <gmime/gmime.h>

#include "content.h"
#include "content_int.h"
#include "linebuf.h"
#include "strutil.h"

/* One configured instance. */
struct content_inst {
	const struct fmx_api	*api;
	struct content_rules	*rules;
	unsigned		 max_depth;
	size_t			 max_parts;
	int			 no_jit;	/* jit = no: interpret (valgrind cannot see JIT code) */
};

/* Per message, owned by the core through api->set_msg_data(). */
struct content_msg {
	pcre2_match_data	*md;		/* written by every match: never shared */
	int			 decided;	/* a rule (or mime_limit) has decided */
	unsigned		 nlogged;	/* WARN/match-error lines so far */
	size_t			 linelen;
	/* up to CONTENT_LINE_MAX + 1: the CR, stripped when its LF arrives */
	struct linebuf		 line;
};

/* GMimeStream reading the spooled message through api->msg_read(). */
struct content_stream {
	GMimeStream		 parent;
	const struct fmx_api	*api;
	struct fmx_ctx		*ctx;
	int			 eof;
	int			 error;		/* msg_read failed */
};

struct content_stream_class {
	GMimeStreamClass	 parent;
};

/* State of one end-of-message MIME pass. */
struct content_walk {
	const struct content_inst *ci;
	struct fmx_ctx		*ctx;
	struct content_msg	*st;
	size_t			 nparts;
	int			 overflow;	/* GMime gave up on the nesting */
};

/*
 * The process-global part, written once under content_once and
 * read-only afterwards.
 */
static pthread_once_t content_once = PTHREAD_ONCE_INIT;
static GType content_stream_type;

/* ---------------------------------------------------------------- */
/* Matching */

static void
content_msg_free(void *arg)
{
	struct content_msg *st = arg;

	if (st == NULL)
		return;
	pcre2_match_data_free(st->md);
	linebuf_free(&st->line);
	free(st);
}

/*
 * The message's state, created by whichever hook runs first; NULL only
 * when memory runs out.
 */
static struct content_msg *
content_msg_get(const struct content_inst *ci, struct fmx_ctx *ctx)
{
	struct content_msg *st;

	if ((st = ci->api->msg_data(ctx)) != NULL)
		return st;
	if ((st = calloc(1, sizeof *st)) == NULL)
		goto nomem;
	/* We never read captures: one pair is all a match needs. */
	if ((st->md = pcre2_match_data_create(1, NULL)) == NULL) {
		free(st);
		goto nomem;
	}
	ci->api->set_msg_data(ctx, st, content_msg_free);
	return st;
nomem:
	ci->api->log(ctx, FMX_LOG_WARN, "content: error=\"out of memory\"");
	return NULL;
}

/*
 * A printable, quotable excerpt of a subject for the log: the subject is
 * client input, and a log line must not be splittable or forgeable.
 */
static void
content_excerpt(char *dst, size_t dstlen, const char *s, size_t len)
{
	size_t i, n = 0;
	unsigned char c;

	for (i = 0; i < len && n + 4 < dstlen && i < CONTENT_EXCERPT_MAX; i++) {
		c = (unsigned char)s[i];
		dst[n++] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
	}
	if (i < len && n + 3 < dstlen) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

/* 1 match, 0 no match; a PCRE2 error (limits) is logged and is no match. */
static int
content_match(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st, const struct content_rule *r, const char *s,
    size_t len)
{
	PCRE2_UCHAR msg[128];
	int rc;

	rc = pcre2_match(r->re, (PCRE2_SPTR)s, len, 0,
	    ci->no_jit ? PCRE2_NO_JIT : 0, st->md, ci->rules->mctx);
	/* 0 means the ovector was too small for the captures: still a match. */
	if (rc >= 0)
		return 1;
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (st->nlogged < CONTENT_LOG_MAX) {
		st->nlogged++;
		if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
			snprintf((char *)msg, sizeof msg, "error %d", rc);
		ci->api->log(ctx, FMX_LOG_WARN, "content: rule=%s:%u scope=%s "
		    "error=\"%s\" result=nomatch", ci->rules->path, r->line,
		    content_rules_scope_names[r->scope], (char *)msg);
	}
	return 0;
}

/* A rule decided the message: tell the core, return the verdict. */
static enum fmx_verdict
content_decide(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st, const struct content_rule *r, const char *s,
    size_t len)
{
	const struct content_action_def *a = &content_rules_actions[r->action];
	char reason[CONTENT_REASON_MAX], ex[CONTENT_EXCERPT_MAX + 8];

	st->decided = 1;
	snprintf(reason, sizeof reason, "rule %s:%u matched", ci->rules->path, r->line);
	content_excerpt(ex, sizeof ex, s, len);
	ci->api->log(ctx, FMX_LOG_INFO, "content: rule=%s:%u scope=%s action=%s "
	    "subject=\"%s\"%s%s%s", ci->rules->path, r->line,
	    content_rules_scope_names[r->scope], a->result, ex,
	    r->text != NULL ? " text=\"" : "", r->text != NULL ? r->text : "",
	    r->text != NULL ? "\"" : "");
	if (ci->api->set_result(ctx, a->result, reason) == -1)
		ci->api->log(ctx, FMX_LOG_WARN, "content: rule=%s:%u "
		    "error=\"result refused\"", ci->rules->path, r->line);
	/* The verdict stands with the core's default reply if this is refused. */
	if (r->reply != NULL && ci->api->set_reply(ctx, r->reply) == -1)
		ci->api->log(ctx, FMX_LOG_WARN, "content: rule=%s:%u "
		    "error=\"reply refused\"", ci->rules->path, r->line);
	return a->verdict;
}

/*
 * Runs the rules of one scope, in file order, over a subject given in
 * one or two forms (raw and decoded; alt NULL when there is only one).
 * WARN rules log and let the search go on.
 */
static enum fmx_verdict
content_eval(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st, enum content_scope scope, const char *s,
    size_t len, const char *alt, size_t altlen)
{
	const struct content_rules *rules = ci->rules;
	const struct content_rule *r;
	char ex[CONTENT_EXCERPT_MAX + 8];
	const char *hs;		/* the form that matched, for the log */
	size_t i, hlen;

	for (i = 0; i < rules->n; i++) {
		r = &rules->v[i];
		if (r->scope != scope)
			continue;
		if (content_match(ci, ctx, st, r, s, len)) {
			hs = s;
			hlen = len;
		} else if (alt != NULL && content_match(ci, ctx, st, r, alt, altlen)) {
			hs = alt;
			hlen = altlen;
		} else
			continue;
		if (r->action != CONTENT_ACTION_WARN)
			return content_decide(ci, ctx, st, r, hs, hlen);
		/* A WARN rule matching every line of a big body must not flood the log. */
		if (st->nlogged < CONTENT_LOG_MAX) {
			st->nlogged++;
			content_excerpt(ex, sizeof ex, hs, hlen);
			ci->api->log(ctx, FMX_LOG_WARN, "content: rule=%s:%u "
			    "scope=%s action=warn subject=\"%s\"%s%s%s",
			    rules->path, r->line, content_rules_scope_names[scope], ex,
			    r->text != NULL ? " text=\"" : "",
			    r->text != NULL ? r->text : "",
			    r->text != NULL ? "\"" : "");
		}
	}
	return FMX_CONTINUE;
}

/*
 * "Name: value" with the folds of value removed (CR and LF dropped, the
 * white space after them kept, RFC 5322 2.2.3) and the white space
 * before the value dropped, whatever the core's convention about the
 * space after the colon: rules are written against "Subject: text".
 * White space between name and colon (RFC 5322 section 4.5, obsolete syntax,
 * which mail readers accept) goes too, or "Subject : ..." would slip
 * past every "^Subject:" rule.  malloc'd; NULL when out of memory.
 */
static char *
content_field(const char *name, const char *value, size_t *lenp)
{
	size_t nlen = strlen(name), vlen, n;
	char *f;

	while (nlen > 0 && content_rules_is_space(name[nlen - 1]))
		nlen--;
	while (content_rules_is_space(*value) || *value == '\r' || *value == '\n')
		value++;
	vlen = strlen(value);
	if ((f = malloc(nlen + 2 + vlen + 1)) == NULL)
		return NULL;
	memcpy(f, name, nlen);
	f[nlen] = ':';
	f[nlen + 1] = ' ';
	n = nlen + 2;
	for (; *value != '\0'; value++)
		if (*value != '\r' && *value != '\n')
			f[n++] = *value;
	/* GMime's raw values end in a newline, dropped above; so does trailing WSP. */
	while (n > nlen + 2 && content_rules_is_space(f[n - 1]))
		n--;
	f[n] = '\0';
	*lenp = n;
	return f;
}

/*
 * One header field, raw and decoded.  decoded is the value with RFC 2047
 * encoded-words decoded (NULL: decode raw here).  mime/header scope.
 */
static enum fmx_verdict
content_eval_field(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st, enum content_scope scope, const char *name,
    const char *raw, const char *decoded)
{
	enum fmx_verdict v;
	char *f, *df = NULL, *dec = NULL;
	size_t flen, dflen = 0;

	if ((f = content_field(name, raw, &flen)) == NULL)
		goto nomem;
	if (decoded == NULL) {
		/* The unfolded value: decoding folded text would keep the CRLFs. */
		dec = g_mime_utils_header_decode_text(NULL, f + strlen(name) + 2);
		decoded = dec;
	}
	if (decoded != NULL) {
		if ((df = content_field(name, decoded, &dflen)) == NULL) {
			free(f);
			g_free(dec);
			goto nomem;
		}
		/* Nothing was encoded: one match is enough. */
		if (dflen == flen && memcmp(df, f, flen) == 0) {
			free(df);
			df = NULL;
		}
	}
	v = content_eval(ci, ctx, st, scope, f, flen, df, dflen);
	free(f);
	free(df);
	g_free(dec);
	return v;
nomem:
	ci->api->log(ctx, FMX_LOG_WARN, "content: error=\"out of memory\"");
	return FMX_TEMPFAIL;
}

/* ---------------------------------------------------------------- */
/* GMimeStream over api->msg_read() */

static ssize_t
content_stream_read(GMimeStream *stream, char *buf, size_t len)
{
	struct content_stream *cs = (struct content_stream *)stream;
	long n;

	if (stream->bound_end != -1) {
		if (stream->position >= stream->bound_end)
			return 0;
		if ((gint64)len > stream->bound_end - stream->position)
			len = (size_t)(stream->bound_end - stream->position);
	}
	if (len == 0)
		return 0;
	n = cs->api->msg_read(cs->ctx, (size_t)stream->position, buf, len);
	if (n < 0 || (size_t)n > len) {
		cs->error = 1;
		errno = EIO;
		return -1;
	}
	if (n == 0)
		cs->eof = 1;
	stream->position += n;
	return (ssize_t)n;
}

static ssize_t
content_stream_write(GMimeStream *stream, const char *buf, size_t len)
{
	(void)stream;
	(void)buf;
	(void)len;
	errno = EBADF;		/* the message as received is read-only */
	return -1;
}

static int
content_stream_flush(GMimeStream *stream)
{
	(void)stream;
	return 0;
}

static int
content_stream_close(GMimeStream *stream)
{
	(void)stream;
	return 0;
}

static gboolean
content_stream_eos(GMimeStream *stream)
{
	struct content_stream *cs = (struct content_stream *)stream;

	if (stream->bound_end != -1)
		return stream->position >= stream->bound_end;
	return cs->eof;
}

static int
content_stream_reset(GMimeStream *stream)
{
	struct content_stream *cs = (struct content_stream *)stream;

	stream->position = stream->bound_start;
	cs->eof = 0;
	return 0;
}

static gint64
content_stream_seek(GMimeStream *stream, gint64 offset, GMimeSeekWhence whence)
{
	struct content_stream *cs = (struct content_stream *)stream;
	gint64 real;

	switch (whence) {
	case GMIME_STREAM_SEEK_SET:
		real = offset;
		break;
	case GMIME_STREAM_SEEK_CUR:
		real = stream->position + offset;
		break;
	case GMIME_STREAM_SEEK_END:
		/* The core does not tell the length; the parser never asks. */
		if (stream->bound_end == -1) {
			errno = EINVAL;
			return -1;
		}
		real = stream->bound_end + offset;
		break;
	default:
		errno = EINVAL;
		return -1;
	}
	if (real < stream->bound_start ||
	    (stream->bound_end != -1 && real > stream->bound_end)) {
		errno = EINVAL;
		return -1;
	}
	stream->position = real;
	cs->eof = 0;
	return real;
}

static gint64
content_stream_tell(GMimeStream *stream)
{
	return stream->position;
}

static gint64
content_stream_length(GMimeStream *stream)
{
	if (stream->bound_end == -1) {
		errno = ESPIPE;
		return -1;
	}
	return stream->bound_end - stream->bound_start;
}

static GMimeStream *content_stream_new(const struct fmx_api *, struct fmx_ctx *,
		    gint64 start, gint64 end);

static GMimeStream *
content_stream_substream(GMimeStream *stream, gint64 start, gint64 end)
{
	struct content_stream *cs = (struct content_stream *)stream;

	return content_stream_new(cs->api, cs->ctx, start, end);
}

static void
content_stream_class_init(gpointer klass, gpointer data)
{
	GMimeStreamClass *sc = klass;

	(void)data;
	sc->read = content_stream_read;
	sc->write = content_stream_write;
	sc->flush = content_stream_flush;
	sc->close = content_stream_close;
	sc->eos = content_stream_eos;
	sc->reset = content_stream_reset;
	sc->seek = content_stream_seek;
	sc->tell = content_stream_tell;
	sc->length = content_stream_length;
	sc->substream = content_stream_substream;
}

static GMimeStream *
content_stream_new(const struct fmx_api *api, struct fmx_ctx *ctx, gint64 start,
    gint64 end)
{
	struct content_stream *cs;

	cs = g_object_new(content_stream_type, NULL);
	g_mime_stream_construct(&cs->parent, start, end);
	cs->api = api;
	cs->ctx = ctx;
	return &cs->parent;
}

static void
content_global_init(void)
{
	static const GTypeInfo info = {
		.class_size = sizeof(struct content_stream_class),
		.class_init = content_stream_class_init,
		.instance_size = sizeof(struct content_stream),
	};

	g_mime_init();
	content_stream_type = g_type_register_static(GMIME_TYPE_STREAM,
	    "FrontmxContentStream", &info, 0);
}

long
content_header_decode(const char *value, char *buf, size_t buflen)
{
	char *unfolded, *dec, *valid;
	size_t i, j, len, cut;

	if (value == NULL)
		return -1;
	(void)pthread_once(&content_once, content_global_init);
	/* RFC 5322 2.2.3: unfolding removes each CRLF before white space. */
	if ((unfolded = malloc(strlen(value) + 1)) == NULL)
		return -1;
	for (i = j = 0; value[i] != '\0'; i++)
		if (!(value[i] == '\r' && value[i + 1] == '\n') &&
		    !(value[i] == '\n' && i > 0 && value[i - 1] == '\r'))
			unfolded[j++] = value[i];
	unfolded[j] = '\0';
	dec = g_mime_utils_header_decode_text(NULL, unfolded);
	free(unfolded);
	if (dec == NULL)
		return -1;
	/* A charset GMime mis-guessed must not hand the module invalid UTF-8. */
	valid = g_utf8_make_valid(dec, -1);
	g_free(dec);
	if (valid == NULL)
		return -1;
	/* An encoded word may carry CR, LF, NUL...: never into a header or a log. */
	len = strlen(valid);
	for (i = 0; i < len; i++)
		if (((unsigned char)valid[i] < 0x20 && valid[i] != '\t') ||
		    valid[i] == 0x7f)
			valid[i] = ' ';
	if (buflen > 0) {
		cut = len < buflen ? len : buflen - 1;
		/* Back off to the start of a UTF-8 sequence that fits whole. */
		if (cut < len)
			while (cut > 0 && ((unsigned char)valid[cut] & 0xc0) == 0x80)
				cut--;
		memcpy(buf, valid, cut);
		buf[cut] = '\0';
	}
	g_free(valid);
	return len > LONG_MAX ? -1 : (long)len;
}

/* ---------------------------------------------------------------- */
/* MIME structure */

static void
content_mime_warning(gint64 offset, GMimeParserWarning code, const gchar *item,
    gpointer arg)
{
	struct content_walk *w = arg;

	(void)offset;
	(void)item;
	if (code == GMIME_CRIT_NESTING_OVERFLOW)
		w->overflow = 1;
}

/*
 * Counts the entities of the tree, stopping as soon as a limit is passed
 * (-1).  Depth: the top-level body is 0, and each multipart or
 * message/rfc822 adds one for what it contains.  Run before any rule so
 * that an over-complex message gets mime_limit whatever it contains.
 */
static int
content_mime_measure(struct content_walk *w, GMimeObject *obj, unsigned depth)
{
	GMimeMessage *inner;
	int i, n;

	if (depth > w->ci->max_depth || ++w->nparts > w->ci->max_parts)
		return -1;
	if (GMIME_IS_MULTIPART(obj)) {
		n = g_mime_multipart_get_count((GMimeMultipart *)obj);
		for (i = 0; i < n; i++)
			if (content_mime_measure(w, g_mime_multipart_get_part(
			    (GMimeMultipart *)obj, i), depth + 1) == -1)
				return -1;
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		inner = g_mime_message_part_get_message((GMimeMessagePart *)obj);
		if (inner != NULL && g_mime_message_get_mime_part(inner) != NULL)
			return content_mime_measure(w,
			    g_mime_message_get_mime_part(inner), depth + 1);
	}
	return 0;
}

static enum fmx_verdict
content_mime_headers(struct content_walk *w, GMimeObject *obj)
{
	GMimeHeaderList *list;
	GMimeHeader *h;
	enum fmx_verdict v;
	int i, n;

	if ((list = g_mime_object_get_header_list(obj)) == NULL)
		return FMX_CONTINUE;
	n = g_mime_header_list_get_count(list);
	for (i = 0; i < n; i++) {
		if ((h = g_mime_header_list_get_header_at(list, i)) == NULL)
			continue;
		v = content_eval_field(w->ci, w->ctx, w->st, CONTENT_SCOPE_MIME,
		    g_mime_header_get_name(h),
		    g_mime_header_get_raw_value(h) != NULL ?
		    g_mime_header_get_raw_value(h) : "",
		    g_mime_header_get_value(h) != NULL ?
		    g_mime_header_get_value(h) : "");
		if (v != FMX_CONTINUE || w->st->decided)
			return v;
	}
	return FMX_CONTINUE;
}

/*
 * Both names a part may carry: a sender can put "x.txt" in one and
 * "x.exe" in the other, and mail readers differ in which one they show.
 */
static enum fmx_verdict
content_mime_filenames(struct content_walk *w, GMimeObject *obj)
{
	const char *names[2];
	enum fmx_verdict v;
	int i;

	names[0] = g_mime_object_get_content_disposition_parameter(obj, "filename");
	names[1] = g_mime_object_get_content_type_parameter(obj, "name");
	for (i = 0; i < 2; i++) {
		if (names[i] == NULL || (i == 1 && names[0] != NULL &&
		    strcmp(names[0], names[1]) == 0))
			continue;
		v = content_eval(w->ci, w->ctx, w->st, CONTENT_SCOPE_FILENAME,
		    names[i], strlen(names[i]), NULL, 0);
		if (v != FMX_CONTINUE || w->st->decided)
			return v;
	}
	return FMX_CONTINUE;
}

/* Tree order; depth already checked by content_mime_measure(). */
static enum fmx_verdict
content_mime_walk(struct content_walk *w, GMimeObject *obj)
{
	const struct content_rules *rules = w->ci->rules;
	GMimeMessage *inner;
	enum fmx_verdict v;
	int i, n;

	if (rules->scopes & (1u << CONTENT_SCOPE_MIME)) {
		v = content_mime_headers(w, obj);
		if (v != FMX_CONTINUE || w->st->decided)
			return v;
	}
	if (rules->scopes & (1u << CONTENT_SCOPE_FILENAME)) {
		v = content_mime_filenames(w, obj);
		if (v != FMX_CONTINUE || w->st->decided)
			return v;
	}
	if (GMIME_IS_MULTIPART(obj)) {
		n = g_mime_multipart_get_count((GMimeMultipart *)obj);
		for (i = 0; i < n; i++) {
			v = content_mime_walk(w, g_mime_multipart_get_part(
			    (GMimeMultipart *)obj, i));
			if (v != FMX_CONTINUE || w->st->decided)
				return v;
		}
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		inner = g_mime_message_part_get_message((GMimeMessagePart *)obj);
		if (inner == NULL)
			return FMX_CONTINUE;
		/* The attached message's own header (From, Subject, ...). */
		if (rules->scopes & (1u << CONTENT_SCOPE_MIME)) {
			v = content_mime_headers(w, (GMimeObject *)inner);
			if (v != FMX_CONTINUE || w->st->decided)
				return v;
		}
		if (g_mime_message_get_mime_part(inner) != NULL)
			return content_mime_walk(w, g_mime_message_get_mime_part(inner));
	}
	return FMX_CONTINUE;
}

static enum fmx_verdict
content_mime(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st)
{
	struct content_walk w;
	GMimeParserOptions *opts;
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *msg;
	GMimeObject *top;
	enum fmx_verdict v = FMX_CONTINUE;
	int rerr;

	memset(&w, 0, sizeof w);
	w.ci = ci;
	w.ctx = ctx;
	w.st = st;

	stream = content_stream_new(ci->api, ctx, 0, -1);
	opts = g_mime_parser_options_new();
	g_mime_parser_options_set_warning_callback(opts, content_mime_warning, &w);
	parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	msg = g_mime_parser_construct_message(parser, opts);
	rerr = ((struct content_stream *)stream)->error;

	if (rerr) {
		/* Never judge half a message: fail safe, the client retries. */
		ci->api->log(ctx, FMX_LOG_WARN,
		    "content: error=\"cannot read the message\"");
		v = FMX_TEMPFAIL;
		goto out;
	}
	if (msg == NULL || (top = g_mime_message_get_mime_part(msg)) == NULL) {
		ci->api->log(ctx, FMX_LOG_INFO, "content: mime=unparsed "
		    "(mime and filename rules skipped)");
		goto out;
	}
	if (w.overflow || content_mime_measure(&w, top, 0) == -1) {
		st->decided = 1;
		ci->api->log(ctx, FMX_LOG_INFO, "content: result=mime_limit "
		    "max_depth=%u max_parts=%zu", ci->max_depth, ci->max_parts);
		if (ci->api->set_result(ctx, "mime_limit",
		    w.overflow ? "MIME nesting beyond the parser's limit" :
		    "MIME nesting or part count over the limit") == -1)
			ci->api->log(ctx, FMX_LOG_WARN,
			    "content: error=\"result refused\"");
		if (ci->api->set_reply(ctx, CONTENT_MIME_LIMIT_REPLY) == -1)
			ci->api->log(ctx, FMX_LOG_WARN,
			    "content: error=\"reply refused\"");
		v = FMX_REJECT;
		goto out;
	}
	if (ci->rules->scopes & ((1u << CONTENT_SCOPE_MIME) | (1u << CONTENT_SCOPE_FILENAME)))
		v = content_mime_walk(&w, top);
out:
	/* Part contents are sub-streams of ours: drop them before ctx goes. */
	if (msg != NULL)
		g_object_unref(msg);
	g_object_unref(parser);
	g_object_unref(stream);
	g_mime_parser_options_free(opts);
	return v;
}

/* ---------------------------------------------------------------- */
/* Hooks */

static enum fmx_verdict
content_on_header(void *inst, struct fmx_ctx *ctx, const char *name,
    const char *value)
{
	const struct content_inst *ci = inst;
	struct content_msg *st;

	if (!(ci->rules->scopes & (1u << CONTENT_SCOPE_HEADER)))
		return FMX_CONTINUE;
	if ((st = content_msg_get(ci, ctx)) == NULL)
		return FMX_TEMPFAIL;
	if (st->decided)
		return FMX_CONTINUE;
	return content_eval_field(ci, ctx, st, CONTENT_SCOPE_HEADER, name,
	    value != NULL ? value : "", NULL);
}

/* One complete (or cut) body line from the buffer. */
static enum fmx_verdict
content_body_line(const struct content_inst *ci, struct fmx_ctx *ctx,
    struct content_msg *st)
{
	size_t len = st->linelen;
	enum fmx_verdict v;

	if (len > 0 && st->line.p[len - 1] == '\r')
		len--;
	if (len > CONTENT_LINE_MAX)
		len = CONTENT_LINE_MAX;
	v = content_eval(ci, ctx, st, CONTENT_SCOPE_BODY,
	    st->line.p, len, NULL, 0);
	st->linelen = 0;
	return v;
}

/*
 * Chunks split lines anywhere, even between CR and LF: bytes go into the
 * line buffer up to its size (the rest of an over-long line is dropped)
 * and a line is judged when its LF arrives, minus the CR before it.
 */
static enum fmx_verdict
content_on_body(void *inst, struct fmx_ctx *ctx, const unsigned char *chunk,
    size_t len)
{
	const struct content_inst *ci = inst;
	struct content_msg *st;
	const unsigned char *nl;
	enum fmx_verdict v;
	size_t n, room, want;

	if (!(ci->rules->scopes & (1u << CONTENT_SCOPE_BODY)))
		return FMX_CONTINUE;
	if ((st = content_msg_get(ci, ctx)) == NULL)
		return FMX_TEMPFAIL;
	while (len > 0 && !st->decided) {
		nl = memchr(chunk, '\n', len);
		n = nl != NULL ? (size_t)(nl - chunk) : len;
		/* An over-long line is kept cut at the cap, not refused. */
		want = st->linelen + n;
		if (linebuf_reserve(&st->line, want < CONTENT_LINE_MAX + 1 ? want :
		    CONTENT_LINE_MAX + 1, CONTENT_LINE_START, CONTENT_LINE_MAX + 1) == -1) {
			ci->api->log(ctx, FMX_LOG_WARN,
			    "content: error=\"out of memory\"");
			return FMX_TEMPFAIL;
		}
		room = st->line.cap - st->linelen;
		memcpy(st->line.p + st->linelen, chunk, n < room ? n : room);
		st->linelen += n < room ? n : room;
		if (nl == NULL)
			break;
		chunk += n + 1;
		len -= n + 1;
		if ((v = content_body_line(ci, ctx, st)) != FMX_CONTINUE || st->decided)
			return v;
	}
	return FMX_CONTINUE;
}

static enum fmx_verdict
content_on_eom(void *inst, struct fmx_ctx *ctx)
{
	const struct content_inst *ci = inst;
	struct content_msg *st;
	enum fmx_verdict v;

	if ((st = content_msg_get(ci, ctx)) == NULL)
		return FMX_TEMPFAIL;
	if (st->decided)
		return FMX_CONTINUE;
	/* A last line without CRLF (the core should not pass one). */
	if (st->linelen > 0 && (ci->rules->scopes & (1u << CONTENT_SCOPE_BODY))) {
		if ((v = content_body_line(ci, ctx, st)) != FMX_CONTINUE || st->decided)
			return v;
	}
	/*
	 * The structure is checked even without mime/filename rules:
	 * max_depth and max_parts protect whatever parses the message
	 * after us.
	 */
	return content_mime(ci, ctx, st);
}

/*
 * No on_abort: the only per-message resource is the msg_data, which the
 * core frees after abort (frontmx_filter.h, OWNERSHIP); freeing it here
 * too would be a double free.
 */

/*
 * A number option: str_uint's digits, from min to max.  Blanks after
 * them are the admin's layout (" max_parts = 40 " is 40), as around the
 * key and before the value (str_option_split).
 */
static int
content_uint(const char *v, unsigned long long min, unsigned long long max,
    unsigned long long *out)
{
	char	buf[24];
	size_t	n = strlen(v);

	while (n > 0 && content_rules_is_space((unsigned char)v[n - 1]))
		n--;
	if (n >= sizeof buf)
		return -1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return str_uint(buf, max, out) == -1 || *out < min ? -1 : 0;
}

static void content_fini(void *);

static int
content_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct content_inst *ci;
	char err[CONTENT_ERR_MAX], key[32], *path = NULL;
	const char *value;
	unsigned long long n;
	size_t i;
	int jit;

	*instance = NULL;
	if ((ci = calloc(1, sizeof *ci)) == NULL) {
		api->log(NULL, FMX_LOG_WARN, "content: error=\"out of memory\"");
		return -1;
	}
	ci->api = api;
	ci->max_depth = CONTENT_DEPTH_DEFAULT;
	ci->max_parts = CONTENT_PARTS_DEFAULT;

	for (i = 0; i < noptions; i++) {
		if (str_option_split(options[i], key, sizeof key, &value) == -1) {
			api->log(NULL, FMX_LOG_WARN, "content: bad option \"%s\" "
			    "(expected key=value)", options[i]);
			goto fail;
		}
		if (strcmp(key, "rules") == 0) {
			free(path);
			if ((path = strdup(value)) == NULL) {
				api->log(NULL, FMX_LOG_WARN, "content: error=\"out of memory\"");
				goto fail;
			}
		} else if (strcmp(key, "max_depth") == 0) {
			if (content_uint(value, 1, CONTENT_DEPTH_MAX, &n) == -1) {
				api->log(NULL, FMX_LOG_WARN, "content: max_depth \"%s\" "
				    "is not a number from 1 to %d", value, CONTENT_DEPTH_MAX);
				goto fail;
			}
			ci->max_depth = (unsigned)n;
		} else if (strcmp(key, "max_parts") == 0) {
			if (content_uint(value, 1, CONTENT_PARTS_MAX, &n) == -1) {
				api->log(NULL, FMX_LOG_WARN, "content: max_parts \"%s\" "
				    "is not a number from 1 to %d", value, CONTENT_PARTS_MAX);
				goto fail;
			}
			ci->max_parts = n;
		} else if (strcmp(key, "jit") == 0) {
			if (str_bool(value, &jit) == -1) {
				api->log(NULL, FMX_LOG_WARN, "content: jit \"%s\" "
				    "is not a boolean (yes/no, true/false, on/off, 1/0)",
				    value);
				goto fail;
			}
			ci->no_jit = !jit;
		} else {
			api->log(NULL, FMX_LOG_WARN, "content: unknown option \"%s\" "
			    "(expected rules, max_depth, max_parts or jit)", key);
			goto fail;
		}
	}
	if (path == NULL || *path == '\0') {
		api->log(NULL, FMX_LOG_WARN, "content: option rules=PATH is required");
		goto fail;
	}
	if (content_rules_load(path, &ci->rules, err, sizeof err) == -1) {
		api->log(NULL, FMX_LOG_WARN, "%s", err);
		goto fail;
	}
	free(path);
	(void)pthread_once(&content_once, content_global_init);
	*instance = ci;
	return 0;
fail:
	free(path);
	content_fini(ci);
	return -1;
}

static void
content_fini(void *instance)
{
	struct content_inst *ci = instance;

	if (ci == NULL)
		return;
	content_rules_free(ci->rules);
	free(ci);
}

static const struct fmx_filter content_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "content",
	.flags = 0,
	.init = content_init,
	.fini = content_fini,
	.on_header = content_on_header,
	.on_body = content_on_body,
	.on_eom = content_on_eom,
};

const struct fmx_filter *
content_filter(void)
{
	return &content_table;
}
