"use strict";
// Say so when the form came back after a wrong token.
if (new URLSearchParams(window.location.search).has("failed")) {
  document.getElementById("login-failed").hidden = false;
}
