/**
 * The model's booking action (the seed's `Time_to_121meet` JSON), as the emulated model emits it in
 * tests. `at` as a Date is written the way models do: UTC with a `Z`, no milliseconds.
 */
export function bookingAction(
  at: Date | string,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    action: 'Time_to_121meet',
    name: 'Siddhant',
    email: 'siddhant@gmail.com',
    title: 'Demo',
    participants: [],
    meeting_time: typeof at === 'string' ? at : at.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    friendly_time: null,
    ...over,
  };
}
