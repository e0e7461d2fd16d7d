/**
 * A count for every reason of a reason table (`CloseReason`, `DropReason`, ...), in the table's
 * order, from `counted` or 0: stats show each reason even before it first happens.
 */
export function countPerReason<Reason extends string>(
  table: Readonly<Record<string, Reason>>,
  counted: Partial<Record<Reason, number>> = {},
): Record<Reason, number> {
  const counts = {} as Record<Reason, number>;
  for (const reason of Object.values(table)) counts[reason] = counted[reason] ?? 0;
  return counts;
}
