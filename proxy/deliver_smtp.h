/*
 * deliver_smtp.h - the SMTP backend's operations, shared with LMTP
 *
 * DESCRIPTION
 *	deliver_lmtp.c builds its struct deliver_ops from these: the
 *	dialogue is upstream.c's in both, LHLO and the per-recipient replies
 *	are upstream.c's LMTP mode.  Nothing else calls them; the session
 *	goes through deliver.h.
 */
#ifndef FRONTMX_DELIVER_SMTP_H
#define FRONTMX_DELIVER_SMTP_H

struct deliver;
struct deliver_msg;
struct smtp_ehlo_caps;
struct upstream_client;

int	deliver_smtp_caps(const struct deliver *, struct smtp_ehlo_caps *);
int	deliver_smtp_open(struct deliver *, const struct upstream_client *);
void	deliver_smtp_command(struct deliver *, const char *line);
void	deliver_smtp_data(struct deliver *, const struct deliver_msg *);
void	deliver_smtp_rset(struct deliver *);
void	deliver_smtp_auth(struct deliver *, const char *line);
int	deliver_smtp_idle(const struct deliver *);
int	deliver_smtp_in_tx(const struct deliver *);
void	deliver_smtp_close(struct deliver *);

#endif
