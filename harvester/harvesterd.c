/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harvesterd: arguments and configuration only; the manager does the rest. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harvester/config.h"
#include "harvester/gpu-jobs.h"
#include "harvester/log.h"
#include "harvester/manager.h"
#include "harvester/pool-link.h"

static void help(void)
{
	printf("Usage: harvesterd [OPTIONS]\n\n"
	       "Lend a capped share of this machine's idle CPU to pool jobs.\n\n"
	       "  -c, --config FILE      configuration (default /etc/harvester/harvester.conf,\n"
	       "                         plus FILE.d/*.conf)\n"
	       "  -s, --state-dir DIR    ledger, job spool and results (default /var/lib/harvester)\n"
	       "  -r, --runtime-dir DIR  control socket (default /run/harvester)\n"
	       "      --check-config     validate the configuration and exit\n"
	       "      --no-bpf           do not load the eBPF probe (use the fallbacks)\n"
	       "      --pool-via URL     reach [Pool] URL= through harvester-link listening on\n"
	       "                         URL (ipc://PATH), not by dialling the pool itself\n"
	       "      --input-dir DIR    watch input devices here (default /dev/input)\n"
	       "      --tty-dir DIR      watch terminals here (default /dev/pts; \"\" for none)\n"
	       "  -v, --verbose          log debug messages\n"
	       "  -h, --help             show this help\n"
	       "      --version          show the version\n\n"
	       "See harvesterd(8) and harvester.conf(5).\n");
}

static void print_error(void *userdata, const char *file, unsigned line, const char *msg)
{
	fprintf(stderr, "%s\n", msg);
}

int main(int argc, char *argv[])
{
	enum { ARG_CHECK = 0x100, ARG_NO_BPF, ARG_VERSION, ARG_INPUT_DIR, ARG_TTY_DIR, ARG_POOL_VIA };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "runtime-dir", required_argument, NULL, 'r' },
		{ "check-config", no_argument, NULL, ARG_CHECK },
		{ "no-bpf", no_argument, NULL, ARG_NO_BPF },
		{ "input-dir", required_argument, NULL, ARG_INPUT_DIR },
		{ "tty-dir", required_argument, NULL, ARG_TTY_DIR },
		{ "pool-via", required_argument, NULL, ARG_POOL_VIA },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{}
	};
	struct manager_opts mo = {
		.config_path = "/etc/harvester/harvester.conf",
		.state_dir = "/var/lib/harvester",
		.runtime_dir = "/run/harvester",
	};
	bool check = false;
	int c;

	log_set_prefix("harvesterd");
	while ((c = getopt_long(argc, argv, "c:s:r:vh", opts, NULL)) >= 0) {
		switch (c) {
		case 'c': mo.config_path = optarg; break;
		case 's': mo.state_dir = optarg; break;
		case 'r': mo.runtime_dir = optarg; break;
		case ARG_INPUT_DIR: mo.input_dir = optarg; break;
		case ARG_TTY_DIR: mo.tty_dir = optarg; break;
		case ARG_POOL_VIA:
			/* The hop to harvester-link is local and carries no TLS. */
			if (strncmp(optarg, "ipc://", 6) && strncmp(optarg, "tcp://", 6)) {
				fprintf(stderr, "harvesterd: --pool-via %s: expected an ipc:// (or tcp://) URL\n", optarg);
				return 2;
			}
			pool_link_set_via(optarg);
			break;
		case 'v': log_set_max_level(LOG_DEBUG); break;
		case ARG_CHECK: check = true; break;
		case ARG_NO_BPF: mo.no_bpf = true; break;
		case 'h': help(); return 0;
		case ARG_VERSION: printf("harvesterd %s\n", HARVESTER_VERSION); return 0;
		default:
			fprintf(stderr, "Try 'harvesterd --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "harvesterd: unexpected argument '%s'; try 'harvesterd --help'\n", argv[optind]);
		return 2;
	}

	if (check) {
		struct config cfg;
		int r = config_load(mo.config_path, NULL, &cfg, print_error, NULL);
		if (r < 0) {
			if (r != -EINVAL)
				fprintf(stderr, "%s: %s\n", mo.config_path, strerror(-r));
			return 1;
		}
		printf("%s: configuration is valid\n", mo.config_path);
		config_free(&cfg);
		return 0;
	}

	struct manager *m;
	int r = manager_new(&mo, &m);
	if (r < 0) {
		if (r != -EINVAL)
			log_error_errno(r, "Cannot load %s", mo.config_path);
		else
			log_error("Refusing to start: %s has errors (above)", mo.config_path);
		return 1;
	}
	r = manager_run(m);
	manager_free(m);
	return r == HARVESTERD_EXIT_RESTART ? r : r < 0 ? 1 : 0;
}
