// Stripe checkout: collects the card with Stripe Elements (Stripe.js from js.stripe.com),
// creates a PaymentMethod and submits its id with the store's own form. Also finishes card
// authentication (3-D Secure) on the order page. No inline script: data-* attributes only.
(function () {
  "use strict";
  if (typeof Stripe === "undefined") return;

  var form = document.getElementById("stripe-checkout");
  if (form) {
    var stripe = Stripe(form.getAttribute("data-publishable-key"));
    var elements = stripe.elements();
    var card = elements.create("card");
    card.mount("#card-element");
    var errors = document.getElementById("card-errors");
    form.addEventListener("submit", function (event) {
      if (form.elements.payment_method.value) return;
      event.preventDefault();
      form.querySelector("button[type=submit]").disabled = true;
      stripe.createPaymentMethod({ type: "card", card: card }).then(function (result) {
        if (result.error) {
          errors.textContent = result.error.message;
          form.querySelector("button[type=submit]").disabled = false;
          return;
        }
        form.elements.payment_method.value = result.paymentMethod.id;
        form.submit();
      });
    });
  }

  // A new card whose bank asks for confirmation: show the bank's step, then tell the store.
  var confirmCard = document.getElementById("stripe-confirm-card");
  if (confirmCard) {
    var bank = Stripe(confirmCard.getAttribute("data-publishable-key"));
    confirmCard.addEventListener("submit", function (event) {
      if (confirmCard.getAttribute("data-done")) return;
      event.preventDefault();
      confirmCard.querySelector("button[type=submit]").disabled = true;
      bank.handleNextAction({ clientSecret: confirmCard.getAttribute("data-client-secret") })
        .then(function () {
          confirmCard.setAttribute("data-done", "1");
          confirmCard.submit();
        });
    });
  }

  var action = document.getElementById("stripe-authenticate");
  if (action) {
    var client = Stripe(action.getAttribute("data-publishable-key"));
    action.addEventListener("click", function () {
      action.disabled = true;
      client.handleNextAction({ clientSecret: action.getAttribute("data-client-secret") })
        .then(function () { window.location.reload(); });
    });
  }
})();
