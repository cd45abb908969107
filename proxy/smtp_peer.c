/*
 * smtp_peer.c - who the client is: address, name, HELO, TLS
 *
 * DESCRIPTION
 *	smtp_peer_set() records the peer address as text and port, from the
 *	TCP connection or from a load balancer's PROXY header.
 *	smtp_peer_proxy_input() reads that header before the greeting (the
 *	pure v1/v2 parser is haproxy.c), re-counts the connection under the
 *	real client address, and puts TLS over the socket on an implicit-TLS
 *	listener.
 *
 *	smtp_peer_lookup() names the client by forward-confirmed reverse DNS
 *	(RFC 1912 2.1): a PTR name counts only when its own addresses include
 *	the client's.  The result (s->rdns) is OK, NONE or TEMP; loopback is
 *	"localhost" without asking.  When the name is known, or known to be
 *	unknown, the connect phase of the filters runs
 *	(smtp_connect_filters).
 *
 *	HELO and EHLO: the name the client gives (a new one drops an upstream
 *	connection that was told the old), the helo phase of the filters,
 *	and EHLO's reply with what the proxy honours (smtp_relay_offer_flags,
 *	smtp_relay_size_limit, AUTH only after TLS).  STARTTLS (RFC 3207)
 *	puts the TLS layer over the socket (smtp_peer_tls_wrap, also after a
 *	PROXY header on an implicit-TLS listener), drops what the client
 *	pipelined in the clear (CVE-2011-0411) and forgets everything learnt
 *	before it.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "config.h"
#include "dns.h"
#include "haproxy.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"
#include "smtp_int.h"
#include "smtp_parse.h"
#include "strutil.h"
#include "tls.h"

static void	smtp_peer_rdns_answer(void *arg, int rcode,
	    const unsigned char *pkt, size_t len);

static int
smtp_peer_rdns_start(struct smtp_session *s, const char *qname, int type)
{
	unsigned long long id;

	s->flags |= SMTP_F_RDNS_WAITING;
	id = dns_lookup(bufferevent_get_base(s->bev), qname, type,
	    smtp_peer_rdns_answer, s);
	if (id == 0) {
		s->flags &= ~SMTP_F_RDNS_WAITING;
		return -1;
	}
	/* not answered from the cache already */
	if (s->flags & SMTP_F_RDNS_WAITING)
		s->rdns_id = id;
	return 0;
}

/* Done: name the client, then the connect phase of the filters. */
static void
smtp_peer_rdns_done(struct smtp_session *s, enum smtp_rdns result)
{
	s->rdns = result;
	if (result != SMTP_RDNS_OK)
		snprintf(s->name, sizeof s->name, "unknown");
	log_debug("%016llx smtp client=%s name=%s", s->id, s->addr, s->name);
	smtp_connect_filters(s);
}

/*
 * One answer: the PTR (then ask for the name's addresses), or those
 * addresses (then the name counts only if the client's is among them:
 * a PTR alone is whatever the address owner wants it to be).
 */
static void
smtp_peer_rdns_answer(void *arg, int rcode, const unsigned char *pkt, size_t len)
{
	struct smtp_session *s = arg;
	char name[NS_MAXDNAME];
	unsigned char want[16];
	ns_msg msg;
	ns_rr rr;
	int i, n, family = s->sa.ss_family, found = 0;

	s->flags &= ~SMTP_F_RDNS_WAITING;
	s->rdns_id = 0;
	if (rcode < 0 || rcode == ns_r_servfail) {
		smtp_peer_rdns_done(s, SMTP_RDNS_TEMP);
		return;
	}
	if (rcode != ns_r_noerror || ns_initparse(pkt, (int)len, &msg) == -1) {
		smtp_peer_rdns_done(s, SMTP_RDNS_NONE);
		return;
	}
	n = ns_msg_count(msg, ns_s_an);
	if (s->rdns == SMTP_RDNS_PTR) {
		for (i = 0; i < n && !found; i++)
			if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 &&
			    ns_rr_type(rr) == ns_t_ptr &&
			    dn_expand(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr),
			    name, sizeof name) > 0 && strlen(name) <= SMTP_DOMAIN_MAX &&
			    smtp_parse_domain(name) == 0)
				found = 1;
		if (!found) {
			smtp_peer_rdns_done(s, SMTP_RDNS_NONE);
			return;
		}
		/* ASCII only: tolower(3) would follow the locale. */
		str_lower(name);
		snprintf(s->name, sizeof s->name, "%.255s", name);	/* <= 255: checked */
		s->rdns = SMTP_RDNS_FORWARD;
		if (smtp_peer_rdns_start(s, s->name, family == AF_INET6 ? ns_t_aaaa :
		    ns_t_a) == -1)
			smtp_peer_rdns_done(s, SMTP_RDNS_TEMP);
		return;
	}
	if (family == AF_INET6)
		memcpy(want, &((struct sockaddr_in6 *)&s->sa)->sin6_addr, 16);
	else
		memcpy(want, &((struct sockaddr_in *)&s->sa)->sin_addr, 4);
	for (i = 0; i < n && !found; i++)
		if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 &&
		    ((family == AF_INET && ns_rr_type(rr) == ns_t_a &&
		    ns_rr_rdlen(rr) == 4) ||
		    (family == AF_INET6 && ns_rr_type(rr) == ns_t_aaaa &&
		    ns_rr_rdlen(rr) == 16)) &&
		    memcmp(ns_rr_rdata(rr), want, ns_rr_rdlen(rr)) == 0)
			found = 1;
	smtp_peer_rdns_done(s, found ? SMTP_RDNS_OK : SMTP_RDNS_NONE);
}

/*
 * Who is this client?  Loopback is "localhost" without asking; with
 * dns.reverse off, or without a resolver, nobody is named.
 */
void
smtp_peer_lookup(struct smtp_session *s)
{
	char q[80];
	const unsigned char *a;
	int i, n;

	snprintf(s->name, sizeof s->name, "unknown");
	if (s->sa.ss_family == AF_INET) {
		a = (const unsigned char *)&((struct sockaddr_in *)&s->sa)->sin_addr;
		if (a[0] == 127) {
			snprintf(s->name, sizeof s->name, "localhost");
			smtp_peer_rdns_done(s, SMTP_RDNS_OK);
			return;
		}
		snprintf(q, sizeof q, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1],
		    a[0]);
	} else {
		a = ((struct sockaddr_in6 *)&s->sa)->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)a)) {
			snprintf(s->name, sizeof s->name, "localhost");
			smtp_peer_rdns_done(s, SMTP_RDNS_OK);
			return;
		}
		for (i = 15, n = 0; i >= 0; i--)
			n += snprintf(q + n, sizeof q - (size_t)n, "%x.%x.",
			    a[i] & 0x0f, a[i] >> 4);
		snprintf(q + n, sizeof q - (size_t)n, "ip6.arpa");
	}
	if (!s->cfg->dns_reverse || s->listener == NULL) {
		smtp_peer_rdns_done(s, SMTP_RDNS_NONE);
		return;
	}
	s->rdns = SMTP_RDNS_PTR;
	if (smtp_peer_rdns_start(s, q, ns_t_ptr) == -1)
		smtp_peer_rdns_done(s, SMTP_RDNS_TEMP);
}

/*
 * Our own address on this connection, for milters' {daemon_addr}; only
 * when the chain has a milter (filter_chain_wants_daemon_addr): a
 * getsockname(2) per connection nobody reads is a syscall per message.
 */
void
smtp_peer_local(struct smtp_session *s, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return;
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, s->daemon_addr, sizeof s->daemon_addr);
		s->daemon_port = ntohs(s6->sin6_port);
	} else if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, s->daemon_addr, sizeof s->daemon_addr);
		s->daemon_port = ntohs(s4->sin_port);
	}
}

/* The peer address (TCP, or from the PROXY header) as text and port. */
void
smtp_peer_set(struct smtp_session *s, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		memcpy(&s->sa, s6, sizeof *s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, s->addr, sizeof s->addr);
		s->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		memcpy(&s->sa, s4, sizeof *s4);
		inet_ntop(AF_INET, &s4->sin_addr, s->addr, sizeof s->addr);
		s->port = ntohs(s4->sin_port);
	}
}

/*
 * PROXY protocol (haproxy's proxy-protocol.txt), before our greeting: the
 * client says nothing until it sees 220, so everything in the buffer now
 * is the balancer's.  A bad or missing header closes the connection: it
 * was never an SMTP client we could answer.
 */
void
smtp_peer_proxy_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct sockaddr_storage real;
	unsigned char h[HAPROXY_MAX];
	size_t have = evbuffer_get_length(in), used;
	ev_ssize_t n;
	enum haproxy_status r;

	if (have == 0)
		return;
	n = evbuffer_copyout(in, h, have < sizeof h ? have : sizeof h);
	if (n <= 0)
		return;
	r = haproxy_parse(h, (size_t)n, &used, &real);
	if (r == HAPROXY_MORE)
		return;
	if (r == HAPROXY_BAD)
		goto bad;
	evbuffer_drain(in, used);
	if (r == HAPROXY_ADDR) {
		char was[INET6_ADDRSTRLEN];

		snprintf(was, sizeof was, "%s", s->addr);
		limit_conn_release((const struct sockaddr *)&s->sa);
		smtp_peer_set(s, (const struct sockaddr *)&real);
		log_info("%016llx smtp proxy client=%s port=%u via=%s", s->id,
		    s->addr, s->port, was);
		if (limit_conn_acquire((const struct sockaddr *)&s->sa, s->cfg) == -1) {
			/* Count it anyway so that smtp_session_free can release it. */
			limit_conn_force((const struct sockaddr *)&s->sa);
			metrics_inc(METRIC_CONNECTIONS_REFUSED, "limit");
			/* As worker.c logs it, with the address behind the balancer. */
			log_info("%016llx connection refused reason=limit "
			    "client=%s", s->id, s->addr);
			smtp_reply(s, "421 4.7.0 Error: too many connections");
			smtp_enter_state(s, SMTP_STATE_QUIT);
			return;
		}
	}
	/* haproxy in front of port 465: the header is in clear, TLS follows. */
	if (s->listener->tls == CONFIG_TLS_IMPLICIT && smtp_peer_tls_wrap(s) == -1)
		goto bad;
	smtp_enter_state(s, SMTP_STATE_CONNECT);
	smtp_peer_lookup(s);
	return;
bad:
	log_info("%016llx smtp closing reason=bad-proxy-header client=%s",
	    s->id, s->addr);
	smtp_session_free(s);
}

static int
smtp_peer_starttls_offered(const struct smtp_session *s)
{
	return s->listener != NULL && s->tls == SMTP_TLS_NONE &&
	    (s->listener->tls == CONFIG_TLS_STARTTLS ||
	    s->listener->tls == CONFIG_TLS_REQUIRED);
}

static void
smtp_peer_helo_refused(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	s->helo[0] = '\0';
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_peer_helo_proceed(struct smtp_session *s, const struct filter_result *res)
{
	char auth[160];

	(void)res;
	s->offer = smtp_relay_offer_flags(s);
	if (!(s->flags & SMTP_F_ESMTP)) {
		smtp_reply(s, "250 %s", s->cfg->hostname);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	/* Advertise only what the proxy itself honours (smtp_relay_offer_flags). */
	smtp_auth_offer(s, auth, sizeof auth);
	smtp_reply(s, "250-%s\n250-PIPELINING\n250-SIZE %zu\n%s%s%s%s%s250-CHUNKING\n"
	    "250 ENHANCEDSTATUSCODES",
	    s->cfg->hostname, smtp_relay_size_limit(s), auth,
	    smtp_mail_offer_8bitmime(s) ? "250-8BITMIME\n" : "",
	    smtp_mail_offer_smtputf8(s) ? "250-SMTPUTF8\n" : "",
	    smtp_mail_offer_dsn(s) ? "250-DSN\n" : "",
	    smtp_peer_starttls_offered(s) ? "250-STARTTLS\n" : "");
	smtp_resume(s, SMTP_STATE_COMMAND);
}

const struct smtp_step smtp_peer_step_helo = {
	FILTER_PH_HELO, "HELO", smtp_peer_helo_refused, smtp_peer_helo_proceed
};

static int
smtp_peer_helo(struct smtp_session *s, const char *args, int esmtp)
{
	if (smtp_parse_helo(args) == -1 || strlen(args) > SMTP_HELO_MAX)
		return SMTP_VERB_SYNTAX;
	/* RFC 5321 4.1.4: EHLO/HELO resets the transaction like RSET. */
	smtp_tx_reset(s);
	/*
	 * The upstream connection was told the old name (XCLIENT HELO=,
	 * XFORWARD HELO=): a new name needs a new connection, unless that
	 * one carries the client's AUTH.
	 */
	if (s->auth_id == NULL &&
	    (strcmp(s->helo, args) != 0 ||
	    ((s->flags & SMTP_F_ESMTP) != 0) != esmtp))
		smtp_relay_close(s);
	snprintf(s->helo, sizeof s->helo, "%s", args);
	SMTP_FLAG_SET(s->flags, SMTP_F_ESMTP, esmtp);
	smtp_verb_filter(s, s->helo);
	return SMTP_VERB_OK;
}

int
smtp_peer_cmd_ehlo(struct smtp_session *s, const char *args)
{
	return smtp_peer_helo(s, args, 1);
}

int
smtp_peer_cmd_helo(struct smtp_session *s, const char *args)
{
	return smtp_peer_helo(s, args, 0);
}

int
smtp_peer_tls_wrap(struct smtp_session *s)
{
	struct bufferevent *tls;
	SSL *ssl;

	if ((ssl = tls_server_ssl(s->tls_ctx)) == NULL)
		return -1;
	tls = bufferevent_openssl_filter_new(bufferevent_get_base(s->bev), s->bev,
	    ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	s->bev = tls;
	smtp_chat_setup(s);
	s->tls = SMTP_TLS_HANDSHAKE;
	return 0;
}

int
smtp_peer_cmd_starttls(struct smtp_session *s, const char *args)
{
	struct evbuffer *in;

	(void)args;
	if (s->tls != SMTP_TLS_NONE) {
		smtp_error(s, "503 5.5.1 Error: TLS already active");
		return SMTP_VERB_OK;
	}
	if (!smtp_peer_starttls_offered(s)) {
		smtp_error(s, "502 5.5.1 Error: command not implemented");
		return SMTP_VERB_OK;
	}
	if (s->tls_ctx == NULL) {
		smtp_reply(s, "454 4.7.0 TLS not available due to temporary reason");
		return SMTP_VERB_OK;
	}
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	/*
	 * CVE-2011-0411: whatever the client pipelined after STARTTLS was
	 * sent in the clear and must not run inside the TLS session.
	 */
	in = bufferevent_get_input(s->bev);
	if (evbuffer_get_length(in) > 0) {
		log_info("%016llx smtp discarded %zu bytes pipelined after STARTTLS",
		    s->id, evbuffer_get_length(in));
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	/* The 220 still sits in the plain bufferevent's output: it goes first. */
	if (smtp_peer_tls_wrap(s) == -1) {
		smtp_reply(s, "421 4.7.0 %s TLS setup failed", s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return SMTP_VERB_OK;
	}
	/* RFC 3207 4.2: forget everything learnt before TLS; EHLO again. */
	smtp_tx_reset(s);
	free(s->auth_id);
	s->auth_id = NULL;
	s->helo[0] = '\0';
	s->flags &= ~SMTP_F_ESMTP;
	smtp_relay_close(s);
	s->tls = SMTP_TLS_HANDSHAKE;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
	return SMTP_VERB_OK;
}
