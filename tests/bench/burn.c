/* The harvest load of every arm: one CPU-bound loop that never ends, the
 * same arithmetic whoever runs it. Built twice: plain (harvesterd, nice 19 +
 * SCHED_IDLE) and against the BOINC API (-DWITH_BOINC, as C++), because the
 * BOINC client throttles cooperatively: only a task whose API library reads
 * the suspend/resume messages in its shared memory obeys cpu_usage_limit. */
#ifdef WITH_BOINC
#include <boinc/boinc_api.h>
#endif
#include <stdint.h>

int main(void)
{
	volatile uint64_t x = 1;

#ifdef WITH_BOINC
	if (boinc_init() != 0)
		return 1;
#endif
	for (;;) {
		for (uint64_t i = 0; i < 20000000; i++)
			x = x * 6364136223846793005ULL + i;
#ifdef WITH_BOINC
		/* Never done: the bench stops the client, which kills the task. */
		boinc_fraction_done(0.5);
#endif
	}
	return 0;
}
