/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * harvester-link: the node's network half, privilege-separated from
 * harvesterd as OpenSSH separates its network child. harvesterd runs as
 * root (cgroups, BPF) with no network at all; this program runs as an
 * unprivileged user with network and nothing else, and forwards the
 * daemon's link requests from a local Unix socket to the pool ([Pool] URL=
 * of the same harvester.conf), and the replies back, unchanged
 * (link_relay(), the relay harvest-pool runs for a site).
 *
 * It holds no key and cannot forge anything: tasks are signed by the pool
 * and checked by harvesterd against the pinned key, results are signed by
 * the worker's own key, which stays in harvesterd's state folder. What a
 * compromised link can do is drop or delay messages, which the pool's
 * leases and the daemon's retries already survive.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harvester/config.h"
#include "harvester/log.h"
#include "harvester/macro.h"
#include "net/relay.h"

#define DEFAULT_CONFIG "/etc/harvester/harvester.conf"
#define DEFAULT_LISTEN "ipc:///run/harvester-link/link.ipc"

static void help(void)
{
	printf("Usage: harvester-link [OPTIONS]\n\n"
	       "Relay harvesterd's pool link from a local socket to the pool in [Pool] URL=.\n\n"
	       "  -c, --config FILE   configuration (default " DEFAULT_CONFIG ",\n"
	       "                      plus FILE.d/*.conf)\n"
	       "  -l, --listen URL    where harvesterd dials in (default\n"
	       "                      " DEFAULT_LISTEN ")\n"
	       "      --check-config  validate the configuration and exit\n"
	       "  -h, --help          show this help\n"
	       "      --version       show the version\n\n"
	       "harvesterd uses it when started with --pool-via URL. See harvester-link(8).\n");
}

static void on_config_error(void *userdata, const char *file, unsigned line, const char *msg)
{
	log_error("%s", msg);
}

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/* The same schemes [Pool] URL= takes; harvesterd dials this one, so a
 * listen URL that it could not dial is refused here, not after a timeout. */
static bool valid_listen(const char *url)
{
	static const char *const schemes[] = { "ipc://", "tcp://" };
	for (size_t i = 0; i < ELEMENTSOF(schemes); i++)
		if (has_prefix(url, schemes[i]) && url[strlen(schemes[i])] && !strpbrk(url, " \t"))
			return true;
	return false;
}

int main(int argc, char *argv[])
{
	enum { ARG_CHECK = 0x100, ARG_VERSION };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "check-config", no_argument, NULL, ARG_CHECK },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{}
	};
	const char *config_path = DEFAULT_CONFIG, *listen = DEFAULT_LISTEN;
	bool check = false;
	int c, r;

	log_set_prefix("harvester-link");
	while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'l': listen = optarg; break;
		case ARG_CHECK: check = true; break;
		case 'h': help(); return 0;
		case ARG_VERSION: printf("harvester-link %s\n", HARVESTER_VERSION); return 0;
		default:
			fprintf(stderr, "Try 'harvester-link --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "harvester-link: unexpected argument '%s'; try 'harvester-link --help'\n", argv[optind]);
		return 2;
	}
	/* The daemon's end of this hop is a plain REQ dialer: no TLS on it,
	 * so only a local socket (or loopback tcp, for tests) makes sense. */
	if (!valid_listen(listen)) {
		fprintf(stderr, "harvester-link: --listen %s: expected an ipc:// or tcp:// URL\n", listen);
		return 2;
	}

	struct config cfg;
	r = config_load(config_path, NULL, &cfg, on_config_error, NULL);
	if (r < 0) {
		if (r != -EINVAL)
			log_error_errno(r, "Cannot load %s", config_path);
		else
			log_error("Refusing to start: %s has errors (above)", config_path);
		return 1;
	}
	if (!cfg.pool_url) {
		/* Not an error: a node with local jobs only. The unit ends
		 * cleanly and harvesterd runs without a pool. */
		log_info("No [Pool] URL= in %s: no pool to link to", config_path);
		config_free(&cfg);
		return 0;
	}
	if (has_prefix(cfg.pool_url, "tls+") && !cfg.pool_ca_file) {
		log_error("[Pool] URL=%s needs CAFile= (the pool's CA or certificate)", cfg.pool_url);
		config_free(&cfg);
		return 1;
	}
	if (check) {
		printf("%s: configuration is valid; would relay %s to %s\n", config_path, listen, cfg.pool_url);
		config_free(&cfg);
		return 0;
	}

	if (cfg.pool_ca_file && has_prefix(cfg.pool_url, "tls+"))
		log_info("Relaying %s to the pool at %s (its certificate checked against %s)", listen,
			 cfg.pool_url, cfg.pool_ca_file);
	else
		log_info("Relaying %s to the pool at %s", listen, cfg.pool_url);
	/* Blocks for good: the dial to the pool retries by itself, so an
	 * unreachable pool is not an error, and SIGTERM ends the process
	 * (there is nothing to flush: no state, no keys). */
	r = link_relay(cfg.pool_url, listen, NULL, cfg.pool_ca_file);
	if (r < 0)
		log_error_errno(r, "Cannot relay %s to %s%s", listen, cfg.pool_url,
				r == -ENOENT && has_prefix(listen, "ipc://") ? " (does the socket's folder exist?)" : "");
	config_free(&cfg);
	return r < 0 ? 1 : 0;
}
