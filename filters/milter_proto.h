/*
 * milter_proto.h - the Sendmail milter protocol, MTA side: packets and the
 * checks on what a milter sends back
 *
 * DESCRIPTION
 *	libmilter implements only the filter side of the protocol, so the
 *	MTA side (what Postfix's milter8.c does) is written here by hand.
 *	Everything in this file is pure: no I/O, no allocation, bounded by
 *	the lengths it is given, so t/unit/test_milter_proto.c and
 *	t/fuzz/milter_proto.c can feed it anything.
 *
 *	A packet is a 4-octet length in network order (the command octet
 *	included), one command octet, then the data.  Constants are
 *	libmilter's (mfapi.h, mfdef.h), protocol version 6.
 */
#ifndef FRONTMX_MILTER_PROTO_H
#define FRONTMX_MILTER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define MILTER_VERSION		6
/* A reply larger than this is a protocol error, never an allocation. */
#define MILTER_PKT_MAX		(1024 * 1024)
/* Body chunks the MTA sends: Postfix's MILTER_CHUNK_SIZE. */
#define MILTER_CHUNK		65535
/* A header value a milter adds or changes (folded lines of <= 998). */
#define MILTER_HDR_VALUE_MAX	16384
#define MILTER_HDR_NAME_MAX	76
#define MILTER_SYMLIST_MAX	1024
#define MILTER_REPLY_MAX	1024

/* Commands, MTA -> milter. */
#define SMFIC_ABORT	'A'
#define SMFIC_BODY	'B'
#define SMFIC_CONNECT	'C'
#define SMFIC_MACRO	'D'
#define SMFIC_BODYEOB	'E'
#define SMFIC_HELO	'H'
#define SMFIC_HEADER	'L'
#define SMFIC_MAIL	'M'
#define SMFIC_EOH	'N'
#define SMFIC_OPTNEG	'O'
#define SMFIC_QUIT	'Q'
#define SMFIC_RCPT	'R'
#define SMFIC_DATA	'T'

/* Replies, milter -> MTA. */
#define SMFIR_ADDRCPT		'+'
#define SMFIR_DELRCPT		'-'
#define SMFIR_ADDRCPT_PAR	'2'
#define SMFIR_SHUTDOWN		'4'
#define SMFIR_ACCEPT		'a'
#define SMFIR_REPLBODY		'b'
#define SMFIR_CONTINUE		'c'
#define SMFIR_DISCARD		'd'
#define SMFIR_CHGFROM		'e'
#define SMFIR_CONN_FAIL		'f'
#define SMFIR_ADDHEADER		'h'
#define SMFIR_INSHEADER		'i'
#define SMFIR_CHGHEADER		'm'
#define SMFIR_PROGRESS		'p'
#define SMFIR_QUARANTINE	'q'
#define SMFIR_REJECT		'r'
#define SMFIR_SKIP		's'
#define SMFIR_TEMPFAIL		't'
#define SMFIR_REPLYCODE		'y'

/* Actions a milter may take (SMFIF_*). */
#define SMFIF_ADDHDRS		0x001u
#define SMFIF_CHGBODY		0x002u
#define SMFIF_ADDRCPT		0x004u
#define SMFIF_DELRCPT		0x008u
#define SMFIF_CHGHDRS		0x010u
#define SMFIF_QUARANTINE	0x020u
#define SMFIF_CHGFROM		0x040u
#define SMFIF_ADDRCPT_PAR	0x080u
#define SMFIF_SETSYMLIST	0x100u
#define SMFIF_ALL		0x1ffu

/* Protocol flags (SMFIP_*): events the milter does not want or answer. */
#define SMFIP_NOCONNECT		0x000001u
#define SMFIP_NOHELO		0x000002u
#define SMFIP_NOMAIL		0x000004u
#define SMFIP_NORCPT		0x000008u
#define SMFIP_NOBODY		0x000010u
#define SMFIP_NOHDRS		0x000020u
#define SMFIP_NOEOH		0x000040u
#define SMFIP_NR_HDR		0x000080u
#define SMFIP_NOUNKNOWN		0x000100u
#define SMFIP_NODATA		0x000200u
#define SMFIP_SKIP		0x000400u
#define SMFIP_RCPT_REJ		0x000800u
#define SMFIP_NR_CONN		0x001000u
#define SMFIP_NR_HELO		0x002000u
#define SMFIP_NR_MAIL		0x004000u
#define SMFIP_NR_RCPT		0x008000u
#define SMFIP_NR_DATA		0x010000u
#define SMFIP_NR_UNKN		0x020000u
#define SMFIP_NR_EOH		0x040000u
#define SMFIP_NR_BODY		0x080000u
#define SMFIP_HDR_LEADSPC	0x100000u
/*
 * What frontmx offers: every NO* and NR_* flag, SKIP and HDR_LEADSPC.
 * Not RCPT_REJ: frontmx never shows a milter a recipient it refused.
 */
#define MILTER_OFFER_FLAGS	0x1ff7ffu

/* SETSYMLIST stages, and the stage octet of a D packet for each. */
enum milter_stage {
	MILTER_ST_CONNECT = 0,
	MILTER_ST_HELO,
	MILTER_ST_MAIL,
	MILTER_ST_RCPT,
	MILTER_ST_DATA,
	MILTER_ST_EOM,
	MILTER_ST_EOH,
	MILTER_ST_COUNT		/* must be last */
};

struct milter_pkt {
	char			 cmd;
	const unsigned char	*data;
	size_t			 len;
};

/* The milter's answer to OPTNEG, SETSYMLIST trailer included. */
struct milter_optneg {
	uint32_t	version;
	uint32_t	actions;
	uint32_t	flags;
	int		has_list[MILTER_ST_COUNT];
	char		list[MILTER_ST_COUNT][MILTER_SYMLIST_MAX];
};

/* The 5 octets before a packet's data. */
void	milter_pkt_head(unsigned char out[5], char cmd, size_t datalen);
/*
 * One packet from buf (avail octets): 1 and *used when whole, 0 when
 * more is needed, -1 when its length is 0 or over MILTER_PKT_MAX.
 */
int	milter_pkt_parse(const unsigned char *buf, size_t avail,
	    struct milter_pkt *p, size_t *used);
/*
 * Split data into NUL-terminated strings: the data must end with a NUL
 * and hold between min and max strings.  Count, or -1.
 */
int	milter_strings(const unsigned char *data, size_t len,
	    const char **out, int min, int max);
/*
 * Check the OPTNEG answer against what was offered (version 6,
 * SMFIF_ALL): 0 ok, -1 with *why (a higher version, unoffered actions,
 * a malformed symbol list).
 */
int	milter_optneg_parse(const unsigned char *data, size_t len,
	    struct milter_optneg *o, const char **why);
/*
 * A SMFIR_REPLYCODE answer as an SMTP reply: 4xx or 5xx, multi-line
 * lines joined with CRLF and each "CODE-" but the last "CODE ", the same
 * code on every line, an enhanced status code (if any) of the same class,
 * printable ASCII; "%%" becomes "%".  Written with '\n' between lines (the
 * filter API's form).  0 ok, -1 refused.
 */
int	milter_reply_text(const unsigned char *data, size_t len, char *out,
	    size_t outlen);
/* A header name a milter gives: printable ASCII, no ':', 1-76 octets. */
int	milter_hdr_name_valid(const char *name);
/*
 * A header value a milter gives, made safe for the wire: a line break
 * (LF or CRLF) followed by a space or tab becomes CRLF + that blank (how
 * OpenDKIM folds its DKIM-Signature: the folds are kept so a signature
 * over "simple" headers still verifies); any other CR or LF, NUL or
 * control octet but TAB, a line over 998 octets, or a total over outlen
 * - 1 is refused.  Length written, or -1.
 */
long	milter_hdr_value(const char *in, char *out, size_t outlen);

#endif
