// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Payouts: push payments that can neither re-enter nor block the payer.
/// @notice Every payment is pushed with the 2,300-gas stipend of `send`: enough for an account without
/// code or a logging `receive`, too little for the payee to write any state, so no payee can re-enter.
/// A payee that refuses the payment (a contract that reverts or needs more gas) cannot block a task or
/// a node either: the amount is credited to it and it pulls it with `withdraw`.
/// Invariant: `totalCredits == sum(credits)`, and the inheriting contract's balance covers its own
/// liabilities plus `totalCredits`.
abstract contract Payouts {
    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice A push payment was refused by `to`: the amount waits for `withdraw`.
    event PaymentDeferred(address indexed to, uint256 amount);
    event CreditWithdrawn(address indexed to, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev `withdraw` was called by an account with no credit.
    error NothingToWithdraw(address account);
    /// @dev The withdrawing account refused the transfer of its own credit.
    error WithdrawalFailed(address account, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice Amounts owed to accounts that refused a push payment.
    mapping(address => uint256) public credits;
    uint256 public totalCredits;

    /*//////////////////////////////////////////////////////////////
                                  LOGIC
    //////////////////////////////////////////////////////////////*/

    /// @notice Pulls the caller's whole credit, forwarding all gas (the credit is zeroed first).
    function withdraw() external {
        uint256 amount = credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        totalCredits -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert WithdrawalFailed(msg.sender, amount);
        emit CreditWithdrawn(msg.sender, amount);
    }

    function _pay(address to, uint256 amount) internal {
        if (amount == 0) return;
        // `send` forwards exactly the 2,300-gas stipend: the payee cannot write state, hence cannot re-enter.
        if (!payable(to).send(amount)) {
            credits[to] += amount;
            totalCredits += amount;
            emit PaymentDeferred(to, amount);
        }
    }
}
