/**
 * fast-check settings shared by the property tests. The normal suite runs a few thousand cases per
 * property; set L4PROXY_FUZZ_RUNS to run more (or fewer), e.g. `L4PROXY_FUZZ_RUNS=100000`.
 */
export function fuzzRuns(fallback: number): number {
  const raw = process.env.L4PROXY_FUZZ_RUNS;
  const parsed = raw === undefined ? NaN : Number.parseInt(raw, 10);
  return Number.isSafeInteger(parsed) && parsed > 0 ? parsed : fallback;
}
