"""One script per page, run by st.navigation (dashboard/app.py); a package only so installs ship them."""
