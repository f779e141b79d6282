"""The operator's money: node accounts kept in gas, earnings swept to the payout address, accounts retired.

- ``settings``: what the operator chose (reserve, payout address, threshold, schedule, alert).
- ``book``: each account's balance as the farm's own receipts and fee events move it (no read per round).
- ``gas``: top-ups from the operator account, in batches, before an account could fail for lack of gas.
- ``sweep``: balances above the reserve (and contract credits) to the payout address, exactly once.
- ``retire``: pause, let the tasks finish, quit for the stake, sweep everything; durable across restarts.
- ``funds``: the one object the coordinator holds, hooking the parts into its loop.
- ``resend``: a journaled transaction named again (what a restart settles), today's fee per gas.
- ``cli``: ``python -m cluster payout`` and ``retire``.
"""
